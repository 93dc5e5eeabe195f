"""On-disk cache of decoded images, keyed by the files they come from and the settings used.

Decoding a dataset (JPEG → crop → resize; MRI volume → slices) is deterministic given its
source files and the datamodule's settings, so the result is stored once and reused:
`<dataset root>/.neurosql_cache/<name>-<key>.pt`, a `torch.save`d dict of tensors, where `key`
is a digest of the settings and of every source file's relative path, size and modification
time (a file replaced on disk gives a new key; stale entries are simply no longer read and can
be deleted by hand). Files are written atomically and loaded memory-mapped, so processes on
one machine (DDP ranks, loader workers) share the pages. A cache that cannot be written (a
read-only data folder) only costs a warning; an unreadable one is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from neurosql_pl.files import atomic_writer

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".neurosql_cache"


def file_signature(paths: Iterable[Path], root: Path) -> list[tuple[str, int, int]]:
    """(path relative to `root`, size in bytes, mtime in ns) per file, in the given order."""
    signature = []
    for path in paths:
        st = path.stat()
        signature.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return signature


def cache_path(root: Path, name: str, settings: Mapping[str, object], signature: list) -> Path:
    """`<root>/.neurosql_cache/<name>-<16 hex digits>.pt` for these settings and source files."""
    payload = json.dumps({"settings": dict(settings), "files": signature}, sort_keys=True, default=str)
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return root / CACHE_DIR_NAME / f"{name}-{key}.pt"


def load_cached(path: Path) -> dict[str, Tensor] | None:
    """The dict stored at `path` (memory-mapped), or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, mmap=True, weights_only=True)
    except Exception as e:  # a foreign or damaged cache file: rebuild rather than fail
        log.warning("ignoring unreadable cache %s (%s: %s); rebuilding it", path, type(e).__name__, e)
        return None


def save_cached(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """Store `tensors` at `path` atomically; on an OSError (read-only folder, disk full) warn only."""
    try:
        with atomic_writer(path) as f:
            torch.save(dict(tensors), f)
    except OSError as e:
        log.warning("could not write the cache %s (%s); continuing without it", path, e)

