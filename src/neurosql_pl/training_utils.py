"""What every model of the project (NeuroSQL and the baselines) does alike around training.

`eval_mode` runs a block with networks in eval mode (BatchNorm on its running statistics)
and restores each one's previous mode; generation, reconstruction and the assignment's
G(Q_k) go through it. `check_finite_loss` stops a diverging run with a FloatingPointError
that says where it happened and what to do; Lightning's checkpoint of the last good epoch
is not overwritten.

`WeightEMA` is the exponential moving average of a network's weights that a model samples
with (`ema_decay` of NeuroSQL, VAE, GAN and DDPM); `match_ema_state` fits a checkpoint's EMA
weights to whether the model has one. `generative_model.GenerativeModel` updates and uses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = [
    "WeightEMA",
    "check_ema_decay",
    "check_finite_loss",
    "eval_mode",
    "match_ema_state",
]


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


# ---------------------------------------------------------------- EMA of the weights
def check_ema_decay(decay: float) -> None:
    """ValueError unless 0 ≤ decay < 1 (0 = no EMA)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 = off, typically 0.999), got {decay}")


@torch.no_grad()
def _ema_step(decay: float, averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], count: torch.Tensor) -> None:
    """θ̄ ← d·θ̄ + (1 − d)·θ with d = min(decay, (1 + k)/(10 + k)), k = count (one dtype group);
    integer tensors (BatchNorm's num_batches_tracked) are copied."""
    k = int(count)
    d = min(decay, (1 + k) / (10 + k))
    if averaged[0].is_floating_point():
        torch._foreach_lerp_(list(averaged), list(current), 1.0 - d)
    else:
        torch._foreach_copy_(list(averaged), list(current))


class WeightEMA(AveragedModel):
    """Exponential moving average of a network's weights, for sampling (Yazıcı et al. 2019).

    A `torch.optim.swa_utils.AveragedModel` holding a copy of the network (`.module`). It starts
    as the network's initial weights θ̄_0 = θ_0; after the k-th optimiser step (k = 1, 2, …,
    `update_parameters(network)`), θ̄_k = d_k·θ̄_{k−1} + (1 − d_k)·θ_k with the usual warm-up
    d_k = min(decay, (1 + k)/(10 + k)), so that short runs forget the random initial weights
    (0.999^1000 ≈ 0.37 of them would remain after 1,000 steps without it). After k steps
    `n_averaged` is k + 1 (it counts θ_0 too).

    Buffers are averaged the same way (use_buffers=True): BatchNorm's running mean and variance
    follow the averaged weights, which is what the averaged network meets in eval mode (to
    first order, the statistics of averaged weights are the average of the statistics);
    integer buffers are copied. The copy never trains (no gradients, always in eval mode)
    and is a submodule, so its weights and n_averaged are in the model's state dict, hence
    in every checkpoint, and a resumed run continues the average exactly. Under DDP its
    weights are identical on every rank; its buffers, like the network's, are rank 0's (DDP
    broadcasts them at every forward pass).
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        check_ema_decay(decay)
        super().__init__(network, multi_avg_fn=partial(_ema_step, float(decay)), use_buffers=True)
        self.decay = float(decay)
        self.requires_grad_(False)
        self.update_parameters(network)  # θ̄_0 = θ_0, n_averaged = 1
        self.eval()

    @classmethod
    def of(cls, network: nn.Module, decay: float) -> WeightEMA | None:
        """The EMA of `network`, or None when decay is 0 (off)."""
        return cls(network, decay) if decay > 0 else None

    def train(self, mode: bool = True) -> WeightEMA:
        return super().train(False)  # always in eval mode: BatchNorm never updates from batches here


def match_ema_state(checkpoint: dict[str, Any], ema_name: str, network_name: str, ema: WeightEMA | None) -> None:
    """Fit a checkpoint's state dict (in place, before it is loaded) to whether the model has an EMA.

    ema_name / network_name: the attribute names of the EMA and of the network it averages.
    - EMA on, checkpoint without EMA weights (written with ema_decay 0, or before EMA existed):
      the EMA starts from the checkpoint's network weights (n_averaged = 1, warm-up anew), with
      a warning.
    - EMA on, checkpoint in the layout before `WeightEMA` (the network's keys right under
      ema_name, no n_averaged; the DDPM's EMA until then): the keys move under `module.`, and
      n_averaged = global_step + 1, which continues that EMA's warm-up exactly.
    - EMA off, checkpoint with EMA weights: they are dropped, with a warning; the model
      samples with the network's own weights.
    """
    state = checkpoint["state_dict"]
    prefix = f"{ema_name}."
    ema_keys = [k for k in state if k.startswith(prefix)]
    if ema is None:
        if ema_keys:
            rank_zero_warn(f"the checkpoint's EMA weights ({ema_name}) are not used: this model has ema_decay=0")
            for k in ema_keys:
                del state[k]
        return
    source = f"{network_name}."
    if not ema_keys:
        rank_zero_warn(
            f"the checkpoint has no EMA weights ({ema_name}); the EMA starts from its {network_name} weights"
        )
        for k in [k for k in state if k.startswith(source)]:
            state[f"{prefix}module.{k[len(source):]}"] = state[k].clone()
        state[f"{prefix}n_averaged"] = torch.tensor(1)
    elif f"{prefix}n_averaged" not in state:
        for k in ema_keys:
            state[f"{prefix}module.{k[len(prefix):]}"] = state.pop(k)
        state[f"{prefix}n_averaged"] = torch.tensor(int(checkpoint.get("global_step", 0)) + 1)
