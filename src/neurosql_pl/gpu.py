"""GPU-only conveniences for the trainer piece experiments/configs/trainer/gpu.yaml.

`CompileGenerator` compiles the generator's forward pass in place (``nn.Module.compile``) when
training starts: the parameters and so the checkpoint's keys are unchanged, so a compiled run's
checkpoints load into an uncompiled model and back. The first steps pay the compile time.
"""

from __future__ import annotations

import lightning as L

__all__ = ["CompileGenerator"]


class CompileGenerator(L.Callback):
    """``pl_module.generator.compile(mode=mode)`` at the start of fit (NeuroSQL, GAN: ``generator``;
    VAE: ``decoder``)."""

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in ("generator", "decoder"):
            network = getattr(pl_module, name, None)
            if network is not None:
                network.compile(mode=self.mode)
                return
        raise ValueError(f"{type(pl_module).__name__} has no generator or decoder to compile")
