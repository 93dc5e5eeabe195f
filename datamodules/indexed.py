"""The (image, index) contract that every NeuroSQL datamodule serves.

NeuroSQL keeps one latent code per training image, in a table indexed by the position of the
image in the training set. `IndexedDataset` makes item i of any dataset (after any split or
subset) come out as `(image, i)` with i in [0, len), so that `latents[i]` belongs to that image.
Images are float32 tensors (C, H, W) with values in [-1, 1]; the wrapper checks this at the
boundary so a wrongly scaled dataset fails loudly instead of training on the wrong range.
Both classes implement `__getitems__`, so a DataLoader fetches a whole batch in one call.

`UInt8ImageDataset` holds a whole image set in memory as uint8 (N, C, H, W) and serves it
scaled by x / 127.5 - 1 (0 → -1, 255 → 1); `uint8_to_signed` is that map for a whole tensor,
`uint8_batch_to_signed` the same for a NumPy batch (used by the batched fetches).

`MirroredDataset` adds the left-right mirror image of each of N images as items N … 2N-1
(`mirror_source` is that map, the one place it is written); see `IndexedDataModule`'s `hflip`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

IndexArray = TypeVar("IndexArray", np.ndarray, Tensor)


def uint8_to_signed(images: Tensor) -> Tensor:
    """uint8 tensor with values 0..255 → float32 tensor of the same shape with values in [-1, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 tensor, got {images.dtype}")
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def uint8_batch_to_signed(batch: np.ndarray) -> list[Tensor]:
    """uint8 array (B, C, H, W) → B float32 tensors (C, H, W) in [-1, 1], bit-identical to
    `uint8_to_signed`. Done in NumPy on purpose: see `UInt8ImageDataset.__getitems__`."""
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise ValueError(f"expected a uint8 array (B, C, H, W), got {batch.dtype} {batch.shape}")
    out = batch.astype(np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return list(torch.from_numpy(out).unbind(0))


def check_index(i: int, n: int) -> int:
    """i as an int; IndexError unless 0 ≤ i < n."""
    i = operator.index(i)
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range [0, {n})")
    return i


def mirror_source(indices: IndexArray, n: int) -> tuple[IndexArray, IndexArray]:
    """Items v ∈ [0, 2n) of a mirrored set of n images → (image v mod n, mirrored: v ≥ n).

    Item v < n is image v as it is, item v ≥ n is image v − n flipped left-right. The map
    depends on nothing else (no epoch, worker, seed or run), so a per-index latent code stays
    with the same (image, flip) pair across epochs and resumes. `indices`: int64 array or tensor."""
    return indices % n, indices >= n


class UInt8Items(Protocol):
    """A set of images that serves uint8 batches (what `MirroredDataset` flips)."""

    def __len__(self) -> int: ...

    def uint8_items(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (len(indices), C, H, W): images `indices`, a fresh (writable) array."""
        ...


class UInt8ImageDataset(Dataset[Tensor]):
    """In-memory images: item i is `uint8_to_signed(images[i])`, float32 (C, H, W) in [-1, 1].

    `images` is a CPU uint8 tensor (N, C, H, W); it is kept as uint8 (4x smaller than float).
    """

    def __init__(self, images: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return uint8_to_signed(self.images[i])

    def uint8_items(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (len(indices), C, H, W): a gathered copy of images `indices`."""
        return self.images.numpy()[np.asarray(indices, dtype=np.int64)]

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        """Batched fetch (used by DataLoader): one gather and one conversion per batch.

        Done in NumPy on purpose: it is single-threaded, whereas torch splits ops this size
        over its intra-op threads, which on a busy 2-core machine made an epoch ~30x slower.
        Float32 division and subtraction are correctly rounded, so the result is bit-identical
        to `uint8_to_signed`."""
        return uint8_batch_to_signed(self.uint8_items(indices))


class MirroredDataset(Dataset[Tensor]):
    """N images and their mirror images, 2N items of float32 (C, H, W) in [-1, 1]: item v < N is
    image v, item v ≥ N is image v − N flipped left-right (along W; `mirror_source`).

    `images` serves uint8 batches (`UInt8Items`: `UInt8ImageDataset`, `ImageFileDataset`); the
    flip is done on each uint8 batch in NumPy (see `UInt8ImageDataset.__getitems__` for why
    NumPy), so nothing mirrored is stored and a cache keeps one copy of each image."""

    def __init__(self, images: UInt8Items) -> None:
        self.images = images

    def __len__(self) -> int:
        return 2 * len(self.images)

    def __getitem__(self, v: int) -> Tensor:
        return self.__getitems__([v])[0]

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        """Batched fetch: one uint8 batch of the source images, the mirrored rows flipped, one conversion."""
        v = np.fromiter((check_index(i, len(self)) for i in indices), dtype=np.int64, count=len(indices))
        source, mirrored = mirror_source(v, len(self.images))
        batch = self.images.uint8_items(source)
        batch[mirrored] = batch[mirrored, ..., ::-1]
        return uint8_batch_to_signed(batch)


class IndexedDataset(Dataset[tuple[Tensor, int]]):
    """Wrap a dataset so that item i is `(image, i)`, i in [0, len(dataset)).

    The wrapped dataset yields either an image or a tuple/list whose first element is the
    image (e.g. `(image, label)`); anything after the image is dropped. The image must be a
    float32 tensor (C, H, W) with values in [-1, 1]; otherwise a ValueError says what was found.
    Wrap *after* any split or `Subset`, so that i indexes the set the model actually trains on.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        i = check_index(i, len(self))
        image = self._image(self.dataset[i], i)
        self._check_range(image, i)
        return image, i

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """Batched fetch (used by DataLoader): delegates to the wrapped dataset's `__getitems__`
        when it has one (e.g. `UInt8ImageDataset`, or a `Subset` of it)."""
        n = len(self)
        indices = [check_index(i, n) for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        images = [self._image(item, i) for item, i in zip(items, indices)]
        for image, i in zip(images, indices):  # per image: small ops stay single-threaded (fast)
            self._check_range(image, i)
        return list(zip(images, indices))

    @staticmethod
    def _image(item: object, i: int) -> Tensor:
        """The image of one item of the wrapped dataset; checks dtype and (C, H, W)."""
        image = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(image, Tensor) or image.dtype != torch.float32 or image.ndim != 3:
            what = (
                f"{image.dtype} tensor of shape {tuple(image.shape)}"
                if isinstance(image, Tensor)
                else type(image).__name__
            )
            raise ValueError(f"item {i}: expected a float32 image tensor (C, H, W), got {what}")
        return image

    @staticmethod
    def _check_range(image: Tensor, i: int) -> None:
        lo, hi = (v.item() for v in torch.aminmax(image))
        if not (lo >= -1.0 and hi <= 1.0):  # also catches NaN
            raise ValueError(f"item {i}: image values must lie in [-1, 1], got [{lo:.4g}, {hi:.4g}]")
