"""Reader for the IDX format of the MNIST family (LeCun et al., http://yann.lecun.com/exdb/mnist/).

Layout (all integers big-endian): two zero bytes, a type byte (0x08 = unsigned byte), the
number of dimensions d, then d uint32 sizes, then prod(sizes) bytes of data. MNIST uses magic
number 2049 (0x00000801: labels, d = 1) and 2051 (0x00000803: images, d = 3).

The reader checks the magic number, the sizes and the exact file length, and raises
CorruptFileError naming the file otherwise (typical cause: an interrupted download).
`.gz` files are decompressed transparently.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import CorruptFileError

IDX_LABELS_MAGIC = 2049
IDX_IMAGES_MAGIC = 2051


def _corrupt(path: Path, problem: str) -> CorruptFileError:
    return CorruptFileError(
        f"{path}: {problem}. The file is truncated or corrupt (an interrupted download?): "
        "delete it and re-run to download it again (or put a good copy there)."
    )


def read_idx(path: str | os.PathLike[str], magic: int, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file into a uint8 array of `ndim` dimensions.

    `magic` is the expected magic number (2049 labels, 2051 images). Raises CorruptFileError
    (naming the file) on a wrong magic number, wrong dimensionality or wrong file length.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise _corrupt(path, f"cannot be decompressed ({e})") from e

    if len(raw) < 4:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than the 4-byte IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise _corrupt(path, f"magic number {found}, expected {magic}")
    if raw[3] != ndim:  # the low byte of the magic number is the dimensionality
        raise _corrupt(path, f"{raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than its {header}-byte header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise _corrupt(path, f"{len(raw)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable


def read_idx_images(path: str | os.PathLike[str], height: int = 28, width: int = 28) -> np.ndarray:
    """Images file (magic 2051) → uint8 array (N, height, width)."""
    images = read_idx(path, IDX_IMAGES_MAGIC, 3)
    if images.shape[1:] != (height, width):
        raise _corrupt(Path(path), f"images of size {images.shape[1:]}, expected {(height, width)}")
    return images


def read_idx_labels(path: str | os.PathLike[str], num_classes: int = 10) -> np.ndarray:
    """Labels file (magic 2049) → uint8 array (N,), every value in [0, num_classes)."""
    labels = read_idx(path, IDX_LABELS_MAGIC, 1)
    if labels.size and int(labels.max()) >= num_classes:
        raise _corrupt(Path(path), f"label {int(labels.max())} outside [0, {num_classes})")
    return labels
