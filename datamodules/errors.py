"""Errors shared by the datamodules: data missing, a file on disk malformed, a download corrupt.

Each message says which file or directory is at fault and what to do about it, so a user who
only sees the traceback can fix the problem without reading the code.
"""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not on disk and could not be downloaded (or download was off)."""


class CorruptFileError(ValueError):
    """A dataset file on disk is truncated or malformed (wrong magic number, size or shape)."""


class ChecksumMismatchError(ValueError):
    """Downloaded bytes do not have the expected sha256; nothing was written in their place."""
