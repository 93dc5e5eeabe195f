"""What a run leaves in its folder, and the sample grids it logs while it trains.

`RunArtifacts` writes, at the end of `fit`, into `out_dir` (default: the trainer's
`default_root_dir`):
  samples.png          a grid of `num_samples` images G(z), z ~ N(0, I_d) (fixed seed);
  reconstructions.png  rows of real images X_i above their reconstructions G(Ẑ_i);
  metrics.json         final train loss, assignment statistics, epoch and total time.
Each epoch it logs the same sample grid (uint8, as W&B needs) to loggers that take images, and
every checkpoint gets the W&B run id (`loggers.CHECKPOINT_KEY`) so a resume continues that run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from .files import save_png, write_json_atomic
from .images import image_grid, trainer_images
from .loggers import CHECKPOINT_KEY


class RunArtifacts(L.Callback):
    """Writes samples.png, reconstructions.png and metrics.json; logs sample grids each epoch."""

    def __init__(self, out_dir: str | None = None, num_samples: int = 64, num_reconstructions: int = 32, seed: int = 0) -> None:
        self.out_dir = out_dir
        self.num_samples, self.num_reconstructions, self.seed = num_samples, num_reconstructions, seed
        self._epoch_starts: list[float] = []
        self._fit_start = 0.0
        self._fit_end = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._epoch_starts = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "log_image") and trainer.is_global_zero:
                logger.log_image(key="samples", images=[image_grid(self._samples(pl_module))], step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_end = time.perf_counter()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[CHECKPOINT_KEY] = str(logger.version)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(self.out_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(self._samples(pl_module)), out / "samples.png")
        if getattr(pl_module, "reconstructs_from", None) is not None:  # GenerativeModel: NeuroSQL, the VAE
            save_png(self._reconstruction_grid(trainer, pl_module), out / "reconstructions.png")
        write_json_atomic(self.metrics(trainer), out / "metrics.json")

    def metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        """Final logged values plus timing (seconds)."""
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        end = self._fit_end or time.perf_counter()
        bounds = self._epoch_starts + [end]
        epoch_times = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        return {
            "train_loss": logged.get("train/loss_epoch", None),
            "assign_mean_cost": logged.get("assign/mean_cost", None),
            "assign_total_cost": logged.get("assign/total_cost", None),
            "assign_total_cost_before": logged.get("assign/total_cost_before", None),
            "assign_frac_changed": logged.get("assign/frac_changed", None),
            "assign_time_s": logged.get("assign/time_s", None),
            "epochs": len(epoch_times),
            "epoch_time_s": float(np.mean(epoch_times)) if epoch_times else None,
            "epoch_times_s": epoch_times,
            "total_time_s": end - self._fit_start,
            "logged": logged,
        }

    def _samples(self, pl_module: L.LightningModule) -> torch.Tensor:
        return pl_module.sample(self.num_samples, generator=torch.Generator().manual_seed(self.seed))

    def _reconstruction_grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> np.ndarray:
        """Rows of 8: real images, then their reconstructions, alternating."""
        n = trainer.datamodule.num_samples
        idx = torch.linspace(0, n - 1, min(self.num_reconstructions, n)).long()
        count = len(idx)
        real = trainer_images(trainer)(idx)
        fake = pl_module.reconstruct_training(real.to(pl_module.device), idx.to(pl_module.device)).cpu()
        rows = [t for k in range(0, count, 8) for t in (real[k : k + 8], fake[k : k + 8])]
        return image_grid(torch.cat(rows), nrow=8)
