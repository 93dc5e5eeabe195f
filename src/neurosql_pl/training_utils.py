"""What every model of the project (NeuroSQL and the baselines) does alike around training.

`eval_mode` runs a block with networks in eval mode (BatchNorm on its running statistics)
and restores each one's previous mode; generation, reconstruction and the assignment's
G(Q_k) go through it. `check_finite_loss` stops a diverging run with a FloatingPointError
that says where it happened and what to do; Lightning's checkpoint of the last good epoch
is not overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import nn

__all__ = ["check_finite_loss", "eval_mode"]


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block, then restore each one's previous mode."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def check_finite_loss(loss: torch.Tensor, module: L.LightningModule, remedy: str = "lower the learning rate") -> None:
    """Raise FloatingPointError, naming the epoch, step and `remedy`, if `loss` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss.item()} at epoch {module.current_epoch}, step {module.global_step}; "
            f"{remedy}; the last good checkpoint is kept"
        )
