"""Test helper: images that carry their source id in their pixels, and decoders that read it back.

With these, a test knows which source image a datamodule served, independently of the
datamodule. Each code survives what its datamodule does to an image:
- colour (`id_picture` → `decode_colour_ids`; CelebA, AFHQ, image folders): a flat RGB colour
  whose three channels are the id's base-6 digits at levels 20, 63, …, 235. A flat colour stays
  flat through centre crops and resizing, and JPEG moves it by a few levels, far inside the
  43-level spacing. Ids 0 … 215.
- gray value (`write_mnist_ids` → `decode_gray_ids`; MNIST): every pixel of an image is its id
  (IDX files are lossless). Ids 0 … 255.
- pixel count (`write_oasis_ids` → `decode_count_ids`; OASIS): slice z of volume v has
  v · depth + z + COUNT_OFFSET bright voxels on a zero background. Reorienting, per-volume
  normalisation (0 → −1, bright → 1) and square padding keep the count, as long as the slice is
  not resized (image_size = the slice's side).

    write_celeba(tmp_path, 30, draw=id_picture)     # file k + 1 shows id k
    decode_colour_ids(dm.train_images())            # → int64 (N,): the id of each image
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from torch import Tensor

from tests.helpers.idx_files import write_idx
from tests.helpers.image_files import analyze_affine, oasis_name, oasis_t88_path, save_volume

COLOUR_BASE, COLOUR_LOW, COLOUR_STEP = 6, 20, 43
COUNT_OFFSET = 8  # bright voxels of id 0; keeps > 1 % of each volume bright (its 99th percentile)
BRIGHT = 1000.0

T = TypeVar("T")


def _levels(images: Tensor) -> Tensor:
    """Images (B, C, H, W) in [-1, 1] → float pixel levels 0 … 255 (unrounded)."""
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
    return (images.double() + 1.0) * 127.5


def id_picture(k: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3) of one flat colour that encodes id k (see module doc); `seed`
    is ignored (it is there to fit tests.helpers.image_files.Draw)."""
    if not 0 <= k < COLOUR_BASE**3:
        raise ValueError(f"id {k} outside the colour code's 0 … {COLOUR_BASE**3 - 1}")
    digits = [k // COLOUR_BASE**2, k // COLOUR_BASE % COLOUR_BASE, k % COLOUR_BASE]
    colour = np.array([COLOUR_LOW + COLOUR_STEP * d for d in digits], dtype=np.uint8)
    return np.broadcast_to(colour, (height, width, 3)).copy()


def decode_colour_ids(images: Tensor) -> Tensor:
    """int64 (B,): the id of each image (B, 3, H, W) in [-1, 1] drawn by `id_picture`."""
    levels = _levels(images).mean(dim=(2, 3))
    digits = ((levels - COLOUR_LOW) / COLOUR_STEP).round().clamp(0, COLOUR_BASE - 1).long()
    return digits[:, 0] * COLOUR_BASE**2 + digits[:, 1] * COLOUR_BASE + digits[:, 2]


def write_mnist_ids(root: Path, n_train: int, n_test: int) -> Path:
    """The four MNIST IDX files in root/MNIST/raw: training image k shows id k, test image j id
    n_train + j; labels cycle 0 … 9. Returns root, the data_dir."""
    raw = Path(root) / "MNIST" / "raw"
    for split, first, n in (("train", 0, n_train), ("t10k", n_train, n_test)):
        ids = np.arange(first, first + n)
        if ids.size and ids.max() > 255:
            raise ValueError(f"the gray code holds ids 0 … 255, got up to {ids.max()}")
        write_idx(raw / f"{split}-images-idx3-ubyte", np.broadcast_to(ids[:, None, None], (n, 28, 28)).astype(np.uint8))
        write_idx(raw / f"{split}-labels-idx1-ubyte", (ids % 10).astype(np.uint8))
    return Path(root)


def decode_gray_ids(images: Tensor) -> Tensor:
    """int64 (B,): the id of each image (B, 1, H, W) in [-1, 1] written by `write_mnist_ids`."""
    return _levels(images).mean(dim=(1, 2, 3)).round().long()


def write_oasis_ids(
    root: Path, n_subjects: int, rescans: int = 1, side: int = 16, depth: int = 6
) -> list[tuple[str, list[int]]]:
    """OASIS-1's layout (Analyze .hdr/.img T88_111 masked images, an unmasked decoy beside each
    MR1) under root/oasis/disc1: subjects 1 … n_subjects, the first `rescans` also with an MR2.
    Volume v (in path order) is side × side × depth; its axial slice z shows id v · depth + z
    as a pixel count (module doc). Returns, per volume in path order, (subject, slice ids
    inferior → superior)."""
    affine = analyze_affine((side, side, depth))
    volumes: list[tuple[str, list[int]]] = []
    for s in range(1, n_subjects + 1):
        for session in (1, 2) if s <= rescans else (1,):
            ids = [len(volumes) * depth + z for z in range(depth)]
            volume = np.zeros((side * side, depth), dtype=np.float32)
            for z, k in enumerate(ids):
                if k + COUNT_OFFSET > side * side:
                    raise ValueError(f"id {k} needs more than the {side * side} pixels of a slice")
                volume[: k + COUNT_OFFSET, z] = BRIGHT
            volume = volume.reshape(side, side, depth)
            path = save_volume(oasis_t88_path(root, s, session), volume, affine)
            if session == 1:  # what the "oasis" layout must skip: the unmasked image
                sid = oasis_name(s, session)
                save_volume(path.with_name(f"{sid}_mpr_n4_anon_111_t88_gfc.hdr"), volume, affine)
            volumes.append((f"OAS1_{s:04d}", ids))
    return volumes


def decode_count_ids(images: Tensor) -> Tensor:
    """int64 (B,): the id of each slice image (B, 1, S, S) in [-1, 1] of `write_oasis_ids`."""
    return (images > 0).sum(dim=(1, 2, 3)).long() - COUNT_OFFSET


def pick(items: Sequence[T], positions: Tensor) -> list[T]:
    """items[p] for each p of an int64 tensor of positions (a split's or a subset's)."""
    return [items[p] for p in positions.tolist()]

