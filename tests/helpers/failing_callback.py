"""A callback that fails as a bug in the code would (a plain RuntimeError, no UserError), for the
test that such an exception keeps its traceback:

    neurosql fit … --trainer.callbacks+=tests.helpers.failing_callback.FailOnFitStart
"""

from __future__ import annotations

import lightning as L

MESSAGE = "a bug, not an error of the user's"


class FailOnFitStart(L.Callback):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise RuntimeError(MESSAGE)
