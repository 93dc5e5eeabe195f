"""The protocol every NeuroSQL datamodule follows, written once.

A datamodule of this project
- takes type-hinted constructor arguments (LightningCLI builds it from YAML) and saves them
  with `save_hyperparameters()`;
- downloads (or checks that the files are there) in `prepare_data()` and only reads files and
  assigns state in `setup()`;
- serves batches `(images float32 (B, C, H, W) in [-1, 1], indices int64 (B,))`, where the
  index i ∈ [0, num_samples) is the row of the training image in the model's per-sample tables,
  counted after the train/validation split and after the training subset;
- exposes `num_samples` (N training images; 2N with `hflip`), `image_shape` (C, H, W) and
  `train_images(indices)`.

Mirroring (`hflip`, an option of the image datamodules: CelebA, AFHQ, image folders, Emoji3D,
OASIS; not MNIST, whose digits are not mirror-symmetric): the training set becomes the N images
(after the split and the subset) followed by their left-right mirror images, 2N items. Index
v < N is image v, index v ≥ N is image v − N flipped along the width (`indexed.mirror_source`),
whatever the epoch, the loader worker or the run, so the per-index codes stay with the same
(image, flip). `num_samples` is 2N, `train_images` serves the mirror images too (bit-identical
to the loader's), and every per-index table (`train_indices`, `train_files`, labels) has 2N rows,
rows N … 2N-1 repeating rows 0 … N-1. The validation and test sets are not mirrored.

`IndexedDataModule` holds the parts that are the same for every dataset: argument checks,
the loaders, `num_samples`, `train_indices`, `train_images`, the mirroring. A subclass builds
`train_set` (with `_training_set`, which mirrors), `val_set` and `test_set` (each an
`IndexedDataset`) in `setup()` and implements `_train_images_at(indices)` for the N images.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler

from .indexed import IndexedDataset, MirroredDataset, UInt8Items, mirror_source
from .splits import SUBSET_MODES

T = TypeVar("T")
Rows = TypeVar("Rows", Tensor, list)


def check_image_size(image_size: int) -> None:
    """Raise ValueError unless image_size ≥ 1 (pixels per side of the square output)."""
    if operator.index(image_size) < 1:
        raise ValueError(f"image_size must be ≥ 1 (pixels per side), got {image_size}")


def check_indices(indices: Tensor | Sequence[int] | None, n: int) -> Tensor | None:
    """`indices` as a 1-D int64 tensor with every value in [0, n); None stays None (= all).

    Raises TypeError for a non-integer tensor or one that is not 1-D, IndexError for a value
    outside [0, n)."""
    if indices is None:
        return None
    idx = torch.as_tensor(indices) if isinstance(indices, Tensor) or len(indices) else torch.zeros(0, dtype=torch.int64)
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex() or idx.ndim != 1:
        raise TypeError(f"indices must be a 1-D integer tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
    idx = idx.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"indices must lie in [0, {n}), got values in [{int(idx.min())}, {int(idx.max())}]")
    return idx


class IndexedDataModule(L.LightningDataModule):
    """Shared loaders and post-setup state of the (image, index) datamodules (see module doc).

    Args (every subclass takes these, under these names):
        data_dir: root directory of the data on disk.
        batch_size: images per batch (≥ 1), for every loader.
        num_workers: DataLoader worker processes (0 = load in the main process).
        subset: train on only k of the N training images (1 ≤ k ≤ N); None = all.
        subset_mode: "first" (images 0..k-1) or "random" (k images drawn with `seed`, sorted).
        seed: seeds the random subset, any random split and the training loader's shuffling.
        pin_memory: DataLoader `pin_memory`.
        hflip: also train on each training image mirrored left-right (see module doc): 2N items,
            index v ≥ N is image v − N flipped. The subset is drawn first, from the N images.
            Only datamodules whose images are mirror-symmetric in distribution expose it.
    """

    image_shape: tuple[int, int, int]

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        num_workers: int,
        subset: int | None,
        subset_mode: str,
        seed: int,
        pin_memory: bool,
        hflip: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, got {num_workers}")
        if subset_mode not in SUBSET_MODES:
            raise ValueError(f"subset_mode must be one of {SUBSET_MODES}, got {subset_mode!r}")
        if subset is not None and subset < 1:
            raise ValueError(f"subset must be in 1..N (N = number of training images), got {subset}")
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.subset = subset
        self.subset_mode = subset_mode
        self.seed = seed
        self.pin_memory = pin_memory
        self.hflip = hflip
        self._train_indices: Tensor | None = None  # int64 (N,): positions in the full training split
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None

    # --------------------------------------------------------------- loaders

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.train_set), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_set), shuffle=False)

    # --------------------------------------------------------------- state after setup

    @property
    def num_samples(self) -> int:
        """Size of the per-sample latent table: the N training images, 2N with hflip."""
        return len(self._require(self.train_set, "num_samples"))

    @property
    def train_indices(self) -> Tensor:
        """int64 (num_samples,): position of the image behind each training index in the full
        training split (before the subset); with hflip, rows N … 2N-1 repeat rows 0 … N-1."""
        return self._per_item(self._require(self._train_indices, "train_indices"))

    def train_images(self, indices: Tensor | Sequence[int] | None = None) -> Tensor:
        """The training images at dataset indices `indices` (all when None), in that order:
        float32 (len, C, H, W) in [-1, 1]; row j is what the training loader serves for index
        indices[j] (with hflip, image v − N mirrored for v ≥ N). Raises IndexError for an index
        outside [0, num_samples)."""
        n = len(self._require(self.train_set, "train_images"))
        indices = check_indices(indices, n)
        if not self.hflip:
            return self._train_images_at(indices)
        if indices is None:
            images = self._train_images_at(None)
            return torch.cat([images, images.flip(-1)])
        source, mirrored = mirror_source(indices, n // 2)
        images = self._train_images_at(source)
        images[mirrored] = images[mirrored].flip(-1)
        return images

    def _train_images_at(self, indices: Tensor | None) -> Tensor:
        """Subclass hook: the N training images (unmirrored) at checked int64 `indices` in
        [0, N) (None = all), float32 (len, C, H, W) in [-1, 1]; a fresh tensor."""
        raise NotImplementedError

    # --------------------------------------------------------------- helpers

    def _require(self, value: T | None, name: str = "the datasets") -> T:
        if value is None:
            raise AttributeError(
                f"{type(self).__name__}: {name} is available only after setup(); call setup() first"
            )
        return value

    def _training_set(self, images: UInt8Items) -> IndexedDataset:
        """The training set over `images` (the N training images): mirrored with hflip."""
        return IndexedDataset(MirroredDataset(images) if self.hflip else images)

    def _per_item(self, rows: Rows) -> Rows:
        """Rows of the N training images → rows of the training items: repeated with hflip."""
        if not self.hflip:
            return rows
        return torch.cat([rows, rows]) if isinstance(rows, Tensor) else rows + rows

    def _loader(self, dataset: IndexedDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(dataset, self.seed) if shuffle else None,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )


class EpochSeededSampler(RandomSampler):
    """A random order that depends only on (seed, epoch), so a resumed run sees the same order.

    Lightning calls `set_epoch` at every epoch start (as for DistributedSampler, which it
    substitutes under DDP, seeded the same way).
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
