"""GPU-only conveniences for the trainer piece experiments/configs/trainer/gpu.yaml.

`CompileGenerator` compiles the forward pass of the network a model trains
(``GenerativeModel.trained_network()``: NeuroSQL's and the GAN's generator, the VAE's decoder,
the DDPM's denoiser) in place (``nn.Module.compile``) when training starts: the parameters and
so the checkpoint's keys are unchanged, so a compiled run's checkpoints load into an uncompiled
model and back. The first steps pay the compile time. The EMA copy that samples is not compiled.
"""

from __future__ import annotations

import lightning as L

from .generative_model import GenerativeModel

__all__ = ["CompileGenerator"]


class CompileGenerator(L.Callback):
    """``pl_module.trained_network().compile(mode=mode, backend=backend)`` at the start of fit."""

    def __init__(self, mode: str | None = None, backend: str = "inductor") -> None:
        """
        Args:
            mode: torch.compile's mode (None = "default", "reduce-overhead", "max-autotune", ...).
            backend: torch.compile's backend ("inductor"; "eager" traces the graph only).
        """
        self.mode = mode
        self.backend = backend

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, GenerativeModel):
            raise TypeError(
                f"CompileGenerator compiles the trained network of a neurosql_pl GenerativeModel "
                f"(NeuroSQL, VAE, GAN, DDPM), not of a {type(pl_module).__name__}"
            )
        pl_module.trained_network().compile(mode=self.mode, backend=self.backend)
