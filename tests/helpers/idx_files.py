"""Test helper: tiny, valid MNIST IDX files in the real on-disk layout (no network needed).

    from tests.helpers.idx_files import write_mnist_idx
    write_mnist_idx(tmp_path, n_train=64, n_test=16)      # → tmp_path/MNIST/raw/<4 files>
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)

Images are learnable, not noise: digit d is a bright Gaussian blob at the d-th of ten positions
on a ring (jittered size and position) plus mild noise, uint8 with values reaching 0 and 255.
Labels cycle through 0..9 in a shuffled order, so every digit appears once n ≥ 10.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_MAGIC = {1: 2049, 3: 2051}  # labels, images


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array of 1 (labels) or 3 (images) dimensions as IDX bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = _MAGIC[array.ndim].to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` as an IDX file at `path` (gzipped, with `.gz` appended, if `compress`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def mnist_like(n: int, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size), labels uint8 (n,)): label-dependent blobs, see module doc."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10, dtype=np.uint8), n)
    rng.shuffle(labels)
    angle = 2 * np.pi * labels / 10
    centre = size / 2 + 0.3 * size * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    centre = centre + rng.normal(0.0, 1.0, size=(n, 2))
    width = rng.uniform(2.0, 4.0, size=(n, 1, 1))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    images = 300.0 * np.exp(-d2 / (2 * width**2)) + rng.normal(0.0, 8.0, size=(n, size, size)) - 10.0
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def write_mnist_idx(root: Path, n_train: int, n_test: int, seed: int = 0, compress: bool = False) -> Path:
    """Write the four MNIST files (n_train / n_test images) into root/MNIST/raw; return that dir.

    Train and test use different seeds, so the splits differ. `compress` writes the `.gz`
    variants instead of the plain files.
    """
    raw = Path(root) / "MNIST" / "raw"
    for split, n, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1_000_003)):
        images, labels = mnist_like(n, split_seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return raw
