"""Stopping when the cluster says so: SIGTERM (what SLURM sends before it kills a job) ends a
single-process run after the batch in flight, not after the whole epoch, so that the run is gone
well within the grace period and its last checkpoint (`last.ckpt`, the end of the previous epoch) is
intact. `fit --ckpt_path …/last.ckpt` then replays the interrupted epoch exactly, as after Ctrl-C.

Lightning notes the signal (`trainer.received_sigterm`) and, with several processes, already stops
all of them at the next batch together; alone it would finish the epoch first. The CLI adds
`StopOnSigterm` to every trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["SIGTERMException", "StopOnSigterm", "stopped_message"]


class StopOnSigterm(L.Callback):
    """Raises Lightning's SIGTERMException at the end of the batch during which SIGTERM arrived
    (single process; with DDP, Lightning's own per-batch broadcast stops every rank)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            callback = trainer.checkpoint_callback
            folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
            print(stopped_message(folder, trainer.current_epoch), file=sys.stderr, flush=True)


def stopped_message(checkpoint_dir: Path | None, epoch: int) -> str:
    """What a run stopped by SIGTERM in ``epoch`` (0-based) prints: how to resume it."""
    last = checkpoint_dir / "last.ckpt" if checkpoint_dir is not None else None
    if last is None or not last.is_file():
        return f"stopped by SIGTERM in epoch {epoch}, before any checkpoint was written: start the run again"
    return (f"stopped by SIGTERM in epoch {epoch}; the run is resumable from the end of the last finished epoch: "
            f"add --ckpt_path {last} to the same command")
