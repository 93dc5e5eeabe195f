"""Writing files so that a reader never sees half of one: the project's one atomic writer.

`atomic_writer(path)` opens a temporary file beside `path`; on a clean exit the file is
flushed, fsynced and renamed over `path` (`os.replace`, atomic on POSIX), on an exception it
is deleted and `path` keeps its old content. Every file the project writes (checkpoint-side
caches, lattices, run results, downloads) goes through it; `write_json_atomic` and
`save_png` are the two formats on top of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["atomic_writer", "atomic_write_bytes", "write_json_atomic", "save_png"]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; on a clean exit it replaces
    `path` atomically, on an exception it is deleted and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; caches and results may be shared
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete, never partial."""
    with atomic_writer(path) as f:
        f.write(data)


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write JSON (strict: no NaN/Infinity, sorted keys) through `atomic_writer`."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def save_png(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a uint8 image array, (H, W) or (H, W, 3), as a PNG through `atomic_writer`."""
    from PIL import Image

    if array.dtype != np.uint8:
        raise ValueError(f"save_png expects a uint8 array, got {array.dtype}")
    with atomic_writer(path) as f:
        Image.fromarray(array).save(f, format="PNG")
