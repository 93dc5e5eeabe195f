"""Errors shared by the datamodules: data missing, a file on disk malformed, a download corrupt,
an image with the wrong number of channels.

Each message says which file or directory is at fault and what to do about it, so a user can
fix the problem without reading the code. Each is a `neurosql_pl.errors.UserError` too: the
`neurosql` command prints it without a traceback (status 1).
"""

from __future__ import annotations

from neurosql_pl.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset files are not on disk and could not be downloaded (or download was off)."""


class CorruptFileError(UserError, ValueError):
    """A dataset file on disk is truncated or malformed (wrong magic number, size or shape)."""


class ChecksumMismatchError(UserError, ValueError):
    """Downloaded bytes do not have the expected sha256; nothing was written in their place."""


class ChannelMismatchError(UserError, ValueError):
    """An image file has fewer colour channels than the datamodule was asked to produce
    (a grayscale file where `channels=3` was requested)."""


def dataset_not_found(
    dataset: str, problem: str, layout: str, attempts: list[str] | tuple[str, ...] = (), hint: str = ""
) -> DatasetNotFoundError:
    """The DatasetNotFoundError every datamodule raises: what is missing, the exact layout to
    place by hand (with where to get the files), why each download attempt failed, and a hint."""
    lines = [f"{dataset} not found: {problem}", "Expected layout:", layout]
    if attempts:
        lines.append("Download attempts that failed:")
        lines.extend(f"    - {a}" for a in attempts)
    if hint:
        lines.append(hint)
    return DatasetNotFoundError("\n".join(lines))
