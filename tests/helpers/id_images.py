"""Test helper: images that carry their source id in their pixels, and decoders that read it back.

With these, a test knows which source image a datamodule served, and whether mirrored
left-right, independently of the datamodule. Each code survives what its datamodule does to an
image:
- colour (`id_picture` → `decode_colour_ids`; CelebA, AFHQ, image folders): a flat RGB colour
  whose three channels are the id's base-6 digits at levels 20, 63, …, 235, read from the lower
  half. A flat colour stays flat through centre crops and resizing, and JPEG moves it by a few
  levels, far inside the 43-level spacing. Ids 0 … 215.
- gray value (`write_mnist_ids` → `decode_gray_ids`; MNIST): every pixel of the lower half is
  the id (IDX files are lossless). Ids 0 … 255.
- mirror marker (`marker_mirrored`, for both): the top-left quarter has the opposite level of
  each channel (0 for a level ≥ 128, else 255, so ≥ 128 levels apart). A centred square crop
  keeps it the crop's top-left quarter; a mirrored image has it top-right.
- pixel count (`write_oasis_ids` → `decode_count_ids`; OASIS): slice z of volume v has
  v · depth + z + COUNT_OFFSET bright voxels on a zero background. Reorienting, per-volume
  normalisation (0 → −1, bright → 1) and square padding keep the count, as long as the slice is
  not resized (image_size = the slice's side). They fill the first voxel columns of the stored
  x axis, which the image shows at its right edge (`count_mirrored`: at the left edge).

    write_celeba(tmp_path, 30, draw=id_picture)     # file k + 1 shows id k
    decode_colour_ids(dm.train_images())            # → int64 (N,): the id of each image
    marker_mirrored(dm.train_images())              # → bool (N,): whether each is mirrored
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
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


def _with_marker(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, C) flat pictures → the same with the mirror marker (module doc) in
    the top-left quarter of each."""
    height, width = pixels.shape[-3:-1]
    marked = pixels.copy()
    marked[..., : height // 2, : width // 2, :] = np.where(pixels[..., :1, :1, :] >= 128, 0, 255)
    return marked


def _lower_half(levels: Tensor) -> Tensor:
    """(B, C): the mean level of each channel over the lower half (rows ≥ 5/8 H; clear of the marker)."""
    return levels[:, :, (5 * levels.shape[2]) // 8 :, :].mean(dim=(2, 3))


def id_picture(k: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3): a flat colour that encodes id k, with the mirror marker (see
    module doc); `seed` is ignored (it is there to fit tests.helpers.image_files.Draw)."""
    if not 0 <= k < COLOUR_BASE**3:
        raise ValueError(f"id {k} outside the colour code's 0 … {COLOUR_BASE**3 - 1}")
    digits = [k // COLOUR_BASE**2, k // COLOUR_BASE % COLOUR_BASE, k % COLOUR_BASE]
    colour = np.array([COLOUR_LOW + COLOUR_STEP * d for d in digits], dtype=np.uint8)
    return _with_marker(np.broadcast_to(colour, (height, width, 3)))


def decode_colour_ids(images: Tensor) -> Tensor:
    """int64 (B,): the id of each image (B, 3, H, W) in [-1, 1] drawn by `id_picture`."""
    levels = _lower_half(_levels(images))
    digits = ((levels - COLOUR_LOW) / COLOUR_STEP).round().clamp(0, COLOUR_BASE - 1).long()
    return digits[:, 0] * COLOUR_BASE**2 + digits[:, 1] * COLOUR_BASE + digits[:, 2]


def marker_mirrored(images: Tensor) -> Tensor:
    """bool (B,): whether each image (B, C, H, W) in [-1, 1] of `id_picture` or `write_mnist_ids`
    is mirrored left-right: its marker is in the top-right quarter, not the top-left. Reads
    the middles of the two quarters (rows and columns 1/8 … 3/8 from the edges); raises
    ValueError for an image without the marker in exactly one of them (H, W ≥ 8)."""
    levels = _levels(images)
    height, width = levels.shape[2:]
    if min(height, width) < 8:
        raise ValueError(f"the marker is read from images of at least 8 × 8 pixels, got {height} × {width}")
    rows = slice(height // 8, (3 * height) // 8)
    colour = _lower_half(levels)
    left, right = (  # (B, C): how far each channel of a quarter's middle is from the image's colour
        (levels[:, :, rows, cols].mean(dim=(2, 3)) - colour).abs()
        for cols in (slice(width // 8, (3 * width) // 8), slice((5 * width) // 8, (7 * width) // 8))
    )
    mirrored = right.amin(dim=1) > left.amin(dim=1)
    marked, plain = torch.where(mirrored[:, None], right, left), torch.where(mirrored[:, None], left, right)
    if not ((marked.amin(dim=1) > 100) & (plain.amax(dim=1) < 20)).all():
        raise ValueError("an image without the mirror marker in exactly one top quarter")
    return mirrored


def write_mnist_ids(root: Path, n_train: int, n_test: int) -> Path:
    """The four MNIST IDX files in root/MNIST/raw: training image k shows id k, test image j id
    n_train + j, each with the mirror marker; labels cycle 0 … 9. Returns root, the data_dir."""
    raw = Path(root) / "MNIST" / "raw"
    for split, first, n in (("train", 0, n_train), ("t10k", n_train, n_test)):
        ids = np.arange(first, first + n)
        if ids.size and ids.max() > 255:
            raise ValueError(f"the gray code holds ids 0 … 255, got up to {ids.max()}")
        pictures = _with_marker(np.broadcast_to(ids[:, None, None, None], (n, 28, 28, 1)).astype(np.uint8))
        write_idx(raw / f"{split}-images-idx3-ubyte", pictures[..., 0])
        write_idx(raw / f"{split}-labels-idx1-ubyte", (ids % 10).astype(np.uint8))
    return Path(root)


def decode_gray_ids(images: Tensor) -> Tensor:
    """int64 (B,): the id of each image (B, 1, H, W) in [-1, 1] written by `write_mnist_ids`."""
    return _lower_half(_levels(images))[:, 0].round().long()


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


def count_mirrored(images: Tensor) -> Tensor:
    """bool (B,): whether each slice image (B, 1, S, S) of `write_oasis_ids` is mirrored
    left-right: its bright pixels are in the left half, not the right (module doc)."""
    bright = images > 0
    half = images.shape[-1] // 2
    return bright[..., :half].sum(dim=(1, 2, 3)) > bright[..., half:].sum(dim=(1, 2, 3))


def pick(items: Sequence[T], positions: Tensor) -> list[T]:
    """items[p] for each p of an int64 tensor of positions (a split's or a subset's)."""
    return [items[p] for p in positions.tolist()]

