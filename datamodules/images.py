"""Datamodules over image files on disk (CelebA, AFHQ, any folder): decoding and a shared base.

Decoding one file (`ImageSpec.decode`), the same for every dataset and every code path:
1. open with PIL; a file PIL cannot read (truncated, corrupt, not an image) raises
   CorruptFileError naming it;
2. channels: `channels=3` → RGB (an alpha channel is dropped; a grayscale file raises
   ChannelMismatchError naming it), `channels=1` → PIL's luminance "L" (colour files included);
3. centre-crop a square of side min(crop_size, width, height) (min(width, height) when
   `crop_size` is None), offsets rounded as torchvision's CenterCrop does;
4. resize to image_size × image_size with PIL's antialiased bilinear filter (what
   torchvision's Resize does on PIL images);
→ uint8 (C, image_size, image_size), served as float32 x / 127.5 - 1 in [-1, 1].

Memory: when the decoded training set (uint8, N·C·S² bytes) fits `memory_budget_mb`, it is
decoded once in `setup()` (in `num_workers` processes) and held in memory (CelebA's 162,770 training images at 64 px take
1.9 GiB); with `disk_cache` it is also stored under `<root>/.neurosql_cache/` (see cache.py),
so later runs map it from disk instead of decoding again. Otherwise nothing is held: every image
is decoded from its file when it is served (use `num_workers` loader processes to keep up), and
`train_images(indices)` decodes just the requested ones.

`ImageFilesDataModule` is the base: a subclass says where the dataset lives (`root`), which
files form its train / val / test splits (`find_split_files`), what the layout on disk looks
like (`layout`, shown in every not-found error), and, if it can, how to download it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .base import IndexedDataModule, check_image_size
from .cache import cache_path, file_signature, load_cached, save_cached
from .errors import ChannelMismatchError, CorruptFileError, DatasetNotFoundError, dataset_not_found
from .indexed import IndexedDataset, UInt8ImageDataset, uint8_batch_to_signed, uint8_to_signed
from .splits import select_subset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CHANNEL_CHOICES = (1, 3)
_PALETTE_MODES = ("P", "PA")


def list_image_files(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path (deterministic on every
    platform). The extension is matched case-insensitively. Hidden files and folders (name
    starting with "."; e.g. macOS `._x.jpg` resource forks, `.neurosql_cache`) are skipped."""
    exts = {e.lower() for e in extensions}
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in exts and path.is_file():
            found.append((rel.as_posix(), path))
    return [path for _, path in sorted(found)]


def _is_colour(image: Image.Image) -> bool:
    """Whether a PIL image has colour channels (palette images count as colour)."""
    return image.mode in _PALETTE_MODES or len([b for b in image.getbands() if b != "A"]) >= 3


@dataclass(frozen=True)
class ImageSpec:
    """How a file becomes a uint8 (channels, image_size, image_size) array; see the module doc."""

    channels: int
    image_size: int
    crop_size: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_CHOICES:
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        check_image_size(self.image_size)
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"crop_size must be ≥ 1 or None (largest centred square), got {self.crop_size}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def decode(self, path: Path) -> np.ndarray:
        """The image in file `path` as uint8 (C, S, S). Raises DatasetNotFoundError if the file
        is gone, CorruptFileError if PIL cannot decode it, ChannelMismatchError for a grayscale
        file when channels=3."""
        try:
            with Image.open(path) as opened:  # closing it invalidates `opened`: convert inside
                opened.load()
                mode, colour = opened.mode, _is_colour(opened)
                image = opened.convert("RGB" if self.channels == 3 and colour else "L")
        except FileNotFoundError as e:
            raise DatasetNotFoundError(f"{path}: image file not found ({e}); was it moved or deleted?") from e
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
            raise CorruptFileError(
                f"{path}: cannot be decoded as an image ({type(e).__name__}: {e}). The file is "
                "truncated or corrupt (an interrupted download or extraction?): replace it with a "
                "good copy, or delete it."
            ) from e
        if self.channels == 3 and not colour:
            raise ChannelMismatchError(
                f"{path}: a grayscale image (PIL mode {mode!r}), but channels=3 (RGB) was "
                "requested. Set channels=1 (--data.channels 1) to train on grayscale images (colour files are then "
                "converted to luminance), or convert this file to RGB."
            )
        width, height = image.size
        side = min(width, height) if self.crop_size is None else min(self.crop_size, width, height)
        left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
        image = image.crop((left, top, left + side, top + side))
        if side != self.image_size:
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels)

    def decode_all(self, paths: Sequence[Path], what: str = "images") -> np.ndarray:
        """Decode every file → uint8 (len, C, S, S), logging progress for long lists."""
        out = np.empty((len(paths), *self.shape), dtype=np.uint8)
        start = time.perf_counter()
        for i, path in enumerate(paths):
            out[i] = self.decode(path)
            if (i + 1) % 10_000 == 0:
                log.info("decoded %d / %d %s (%.0f s)", i + 1, len(paths), what, time.perf_counter() - start)
        return out


class ImageFileDataset(Dataset[Tensor]):
    """Item i = the file `paths[i]` decoded by `spec`, as float32 (C, S, S) in [-1, 1]."""

    def __init__(self, paths: Sequence[Path], spec: ImageSpec) -> None:
        self.paths = list(paths)
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return uint8_to_signed(torch.from_numpy(self.spec.decode(self.paths[i])))

    def uint8_items(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (len(indices), C, S, S): the files `indices`, decoded."""
        return self.spec.decode_all([self.paths[i] for i in indices])

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        """Batched fetch (used by DataLoader): decode, then one conversion per batch."""
        return uint8_batch_to_signed(self.uint8_items(indices))


class _DecodedFiles(Dataset[np.ndarray]):
    """Item i = uint8 (C, S, S) of `paths[i]`; lets loader workers decode a preload in parallel."""

    def __init__(self, paths: Sequence[Path], spec: ImageSpec) -> None:
        self.paths, self.spec = list(paths), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.spec.decode(self.paths[i])


def decode_files(paths: Sequence[Path], spec: ImageSpec, num_workers: int = 0, what: str = "images") -> np.ndarray:
    """Decode every file → uint8 (len, C, S, S), in `num_workers` processes when > 0."""
    if num_workers == 0 or len(paths) < 2:
        return spec.decode_all(paths, what)
    loader = DataLoader(_DecodedFiles(paths, spec), batch_size=256, num_workers=num_workers, collate_fn=np.stack)
    out = np.empty((len(paths), *spec.shape), dtype=np.uint8)
    done, start = 0, time.perf_counter()
    for batch in loader:
        out[done : done + len(batch)] = batch
        done += len(batch)
        if done // 10_000 != (done - len(batch)) // 10_000:
            log.info("decoded %d / %d %s (%.0f s)", done, len(paths), what, time.perf_counter() - start)
    return out


def check_files(paths: Sequence[Path], what: str) -> None:
    """Every file exists and is non-empty; else DatasetNotFoundError / CorruptFileError listing
    (up to five of) the offending files. One stat per file, so cheap even for 200k files."""
    missing, empty = [], []
    for path in paths:
        try:
            if os.stat(path).st_size == 0:
                empty.append(path)
        except FileNotFoundError:
            missing.append(path)
    if missing:
        listed = "\n".join(f"    {p}" for p in missing[:5])
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(paths)} {what} files are missing, e.g.\n{listed}\n"
            "Was the archive only partly extracted? Extract it again (or copy the missing files)."
        )
    if empty:
        listed = "\n".join(f"    {p}" for p in empty[:5])
        raise CorruptFileError(
            f"{len(empty)} {what} file(s) are empty (0 bytes), e.g.\n{listed}\n"
            "They are truncated (an interrupted download or extraction?): replace them with good copies."
        )


class ImageFilesDataModule(IndexedDataModule):
    """Base of the datamodules whose samples are image files (see module doc).

    Batches: (images float32 (B, channels, image_size, image_size) in [-1, 1], indices int64 (B,)).
    Index i is the i-th file of the training split (in the subclass's order) after the subset;
    with hflip, index i ≥ N is file i − N mirrored.

    Args (beyond IndexedDataModule's):
        image_size: side of the square output in pixels.
        channels: 3 (RGB) or 1 (grayscale).
        crop_size: side of the centred square cropped before resizing (None = largest square).
        memory_budget_mb: hold the decoded training set in memory (uint8) when it takes at most
            this many MiB; 0 = never (decode every image when served).
        disk_cache: store that decoded training set under `<root>/.neurosql_cache/` and reuse it.
        hflip: add each training image mirrored left-right (IndexedDataModule); the memory and
            disk caches hold each image once, the flip is done when it is served.

    After `setup()`: `num_samples`, `train_images(indices)`, `train_indices`, `train_files`.
    `image_shape` = (channels, image_size, image_size) at any time.
    """

    dataset_name = "images"

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int,
        crop_size: int | None,
        batch_size: int,
        num_workers: int,
        subset: int | None,
        subset_mode: str,
        seed: int,
        memory_budget_mb: int,
        disk_cache: bool,
        pin_memory: bool,
        hflip: bool = False,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, subset, subset_mode, seed, pin_memory, hflip)
        self.spec = ImageSpec(channels, image_size, crop_size)
        if memory_budget_mb < 0:
            raise ValueError(f"memory_budget_mb must be ≥ 0 (0 = never preload), got {memory_budget_mb}")
        self.memory_budget_mb = memory_budget_mb
        self.disk_cache = disk_cache
        self.image_shape = self.spec.shape
        self._train_files: list[Path] | None = None  # (N,): the file of each training image, before any mirroring
        self._train_pixels: Tensor | None = None  # uint8 (N, C, S, S) when preloaded

    # --------------------------------------------------------------- subclass hooks

    @property
    def root(self) -> Path:
        """The dataset's own folder (its files, and the decoded-image cache, live under it)."""
        raise NotImplementedError

    def layout(self) -> str:
        """The expected layout on disk, as shown in not-found errors."""
        raise NotImplementedError

    def find_split_files(self) -> dict[str, list[Path]]:
        """{"train": [...], "val": [...], "test": [...]}: the image files of each split, in index
        order. Raises DatasetNotFoundError (via `not_found`) when the data is not there."""
        raise NotImplementedError

    def not_found(self, problem: str, attempts: Sequence[str] = (), hint: str = "") -> DatasetNotFoundError:
        """A DatasetNotFoundError stating `problem`, the expected layout and failed downloads."""
        return dataset_not_found(self.dataset_name, problem, self.layout(), tuple(attempts), hint)

    # --------------------------------------------------------------- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """List the files of each split, pick the training subset, check the files exist and
        (when it fits `memory_budget_mb`) decode the training set once. Later calls are no-ops."""
        if self.train_set is not None:
            return
        splits = self.find_split_files()
        indices = select_subset(len(splits["train"]), self.subset, self.subset_mode, self.seed)
        files = [splits["train"][i] for i in indices.tolist()]
        check_files(files, f"{self.dataset_name} training image")
        pixels = self._preload(files)
        self._train_indices = indices
        self._train_files = files
        self._train_pixels = pixels
        train = UInt8ImageDataset(pixels) if pixels is not None else ImageFileDataset(files, self.spec)
        self.train_set = self._training_set(train)
        self.val_set = IndexedDataset(ImageFileDataset(splits["val"], self.spec))
        self.test_set = IndexedDataset(ImageFileDataset(splits["test"], self.spec))

    # --------------------------------------------------------------- state after setup

    @property
    def train_files(self) -> list[Path]:
        """The file behind each training index, row i = item i (with hflip, rows N … 2N-1 repeat 0 … N-1)."""
        return self._per_item(self._require(self._train_files, "train_files"))

    @property
    def preloaded(self) -> bool:
        """Whether the decoded training set is held in memory (see `memory_budget_mb`)."""
        return self._train_pixels is not None

    def _train_images_at(self, indices: Tensor | None) -> Tensor:
        if self._train_pixels is not None:
            pixels = self._train_pixels if indices is None else self._train_pixels[indices]
            return uint8_to_signed(pixels)
        files = self._require(self._train_files, "train_files")
        files = files if indices is None else [files[i] for i in indices.tolist()]
        return uint8_to_signed(torch.from_numpy(self.spec.decode_all(files)))

    # --------------------------------------------------------------- helpers

    def _preload(self, files: list[Path]) -> Tensor | None:
        """The decoded training set (uint8 (N, C, S, S)) if it fits the budget, else None."""
        nbytes = len(files) * int(np.prod(self.image_shape))
        if nbytes > self.memory_budget_mb * 2**20:
            log.info(
                "%s: %d training images need %.0f MiB > memory_budget_mb=%d; decoding each when served",
                self.dataset_name, len(files), nbytes / 2**20, self.memory_budget_mb,
            )
            return None
        path = None
        if self.disk_cache:
            settings = {
                "dataset": self.dataset_name,
                "channels": self.spec.channels,
                "image_size": self.spec.image_size,
                "crop_size": self.spec.crop_size,
                "resample": "PIL bilinear",
            }
            path = cache_path(self.root, "train", settings, file_signature(files, self.root))
            cached = load_cached(path)
            images = None if cached is None else cached.get("images")
            if images is not None and images.dtype == torch.uint8 and images.shape == (len(files), *self.image_shape):
                log.info("%s: training images read from the cache %s", self.dataset_name, path)
                return images
        log.info("%s: decoding %d training images into memory (%.0f MiB)", self.dataset_name, len(files), nbytes / 2**20)
        what = f"{self.dataset_name} training images"
        pixels = torch.from_numpy(decode_files(files, self.spec, self.num_workers, what))
        if path is not None:
            save_cached(path, {"images": pixels})
        return pixels
