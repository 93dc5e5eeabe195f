"""The project's own error types: problems a user can fix, each message saying what to do.

Every error that a setting, a dataset or a checkpoint of the user's can cause derives from
`UserError`. The `neurosql` command prints such an error as one line, ``error: <message>``,
and exits with status 1, however deep in `fit` it was raised; any other exception is a bug
and keeps its traceback.

  UserError                  the base: a message that names the problem and the remedy
  CheckpointMismatchError    a checkpoint that does not fit the model or the data it is resumed with
  SettingError               an impossible combination of settings, found once the data is known

The datamodules' errors (`datamodules/errors.py`: DatasetNotFoundError, CorruptFileError,
ChecksumMismatchError, ChannelMismatchError) and `run_folder.EvaluationError` are UserErrors too.
"""

from __future__ import annotations

__all__ = ["CheckpointMismatchError", "SettingError", "UserError"]


class UserError(Exception):
    """An error in what the user gave (settings, data, checkpoint), not in the code."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint built for other data or settings (N, image shape, latent_dim) than the run's."""


class SettingError(UserError, ValueError):
    """Settings that cannot work together, or with this data (found at setup, not in a constructor)."""
