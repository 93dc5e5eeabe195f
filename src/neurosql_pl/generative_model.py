"""`GenerativeModel`: the base of the project's four models (NeuroSQL, VAE, GAN, DDPM).

Each model trains one network that new images come from (`network_name`: NeuroSQL's and the
GAN's `generator`, the VAE's `decoder`, the DDPM's `denoiser`). With `ema_decay` > 0 the base
keeps an exponential moving average of it, `ema_<network_name>` (a `training_utils.WeightEMA`;
the attribute names are the checkpoints' state-dict keys), updates it after every optimiser
step and fits a checkpoint's EMA weights to the model's `ema_decay` on load. Whoever needs a
network asks the model, never its attribute names:

  trained_network()   the network the optimiser trains (what `gpu.CompileGenerator` compiles)
  sampling_network()  the one `sample` draws with: the EMA's copy when there is one
  uses_ema            whether it is the EMA's copy (`neurosql sample` records it in sample.json)
  reconstructs_from   what `reconstruct_training` works from: "indices" (NeuroSQL's per-sample
                      codes), "images" (the VAE's encoder) or None (GAN, DDPM: no reconstructions)
  datamodule          the trainer's datamodule, or None (no trainer, or bare dataloaders)
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from .training_utils import WeightEMA, match_ema_state

__all__ = ["GenerativeModel"]


class GenerativeModel(L.LightningModule):
    """Base of NeuroSQL and the baselines: the EMA of the trained network and who samples with what.

    Subclasses set `network_name`, create that network in their own build step and call
    `build_ema()` right after it; `sample` draws with `sampling_network()`. The hyper-parameter
    `ema_decay` (checked in the subclass's constructor, `training_utils.check_ema_decay`) sets
    the EMA's decay; 0 means no EMA. A subclass with its own `on_load_checkpoint` calls super.
    """

    network_name: ClassVar[str]
    """Attribute of the network the optimiser trains and images come from ("generator", ...)."""
    reconstructs_from: ClassVar[str | None] = None
    """"indices": `reconstruct(idx)` from per-sample codes; "images": `reconstruct_images(x)`
    through an encoder; None: the model cannot reconstruct images."""

    def __init__(self) -> None:
        super().__init__()
        if not isinstance(getattr(type(self), "network_name", None), str):
            raise TypeError(f"{type(self).__name__} must name its trained network in the class attribute network_name")
        setattr(self, self.ema_name, None)  # the EMA, made by build_ema() once the network exists

    # ---------------------------------------------------------------- the networks
    @property
    def ema_name(self) -> str:
        """Attribute (and state-dict prefix) of the EMA: "ema_" + network_name."""
        return f"ema_{self.network_name}"

    @property
    def ema(self) -> WeightEMA | None:
        """The EMA of the trained network's weights; None with ema_decay = 0 or before it is built."""
        return getattr(self, self.ema_name)

    @property
    def uses_ema(self) -> bool:
        """Whether `sample` draws with the EMA's weights rather than the trained ones."""
        return self.ema is not None

    def trained_network(self) -> nn.Module:
        """The network the optimiser trains (`network_name`); RuntimeError before it is built."""
        network = getattr(self, self.network_name)
        if network is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {self.network_name} yet: it is built at setup from the "
                "datamodule's image shape, or at construction when image_shape is given"
            )
        return network

    def sampling_network(self) -> nn.Module:
        """The network `sample` draws with: the EMA's copy when ema_decay > 0, else the trained network."""
        ema = self.ema
        return ema.module if ema is not None else self.trained_network()

    def build_ema(self) -> None:
        """Make the EMA of the trained network as it is now (none when hparams.ema_decay is 0)."""
        setattr(self, self.ema_name, WeightEMA.of(self.trained_network(), self.hparams.ema_decay))

    def update_ema(self) -> None:
        """One EMA update after an optimiser step of the trained network (nothing without an EMA)."""
        if self.ema is not None:
            self.ema.update_parameters(self.trained_network())

    # ---------------------------------------------------------------- Lightning hooks
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA update (automatic optimisation; a model that steps
        its optimisers by hand, as the GAN, calls `update_ema` after the trained network's step)."""
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fit the checkpoint's EMA weights to this model's ema_decay (`training_utils.match_ema_state`)."""
        match_ema_state(checkpoint, self.ema_name, self.network_name, self.ema)

    # ---------------------------------------------------------------- data and reconstructions
    @property
    def datamodule(self) -> Any | None:
        """The attached trainer's datamodule, or None (no trainer, or a fit on bare dataloaders)."""
        return getattr(self._trainer, "datamodule", None)

    def reconstruct_training(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, C, H, W) in [-1, 1] of training images (B, C, H, W) in [-1, 1] at
        dataset indices (B,), from what `reconstructs_from` names; TypeError when it is None."""
        if self.reconstructs_from == "indices":
            return self.reconstruct(indices)
        if self.reconstructs_from == "images":
            return self.reconstruct_images(images)
        raise TypeError(f"{type(self).__name__} does not reconstruct images")
