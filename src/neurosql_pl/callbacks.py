"""Epoch-boundary assignment step of NeuroSQL, as a Lightning Callback.

Every `every_n_epochs` epochs: split the samples into random blocks of size m, build each
block's cost C[i, k] = ℓ(X_i, G(Q_k)) over the lattice points it holds (GEMM form, see
`costs.py`), solve the block's linear assignment, update π, then Ẑ ← ρ·Q_π + (1−ρ)·Ẑ.
The real images' loss features do not change while the loss network is frozen, so they are
computed once and kept (up to `feature_cache_gb`). Logs: assign/mean_cost (mean assigned
cost), assign/frac_changed (fraction of samples whose lattice point changed), assign/time_s.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import lightning as L
import torch

from .assignment import block_assignment, check_permutation, momentum_update

if TYPE_CHECKING:
    from .module import NeuroSQL


class AssignmentCallback(L.Callback):
    """Updates the module's `assignment` (π) and `latents` (Ẑ) at epoch ends."""

    def __init__(
        self,
        block_size: int = 256,
        rho: float = 1.0,
        solver: str = "exact",
        every_n_epochs: int = 1,
        seed: int = 0,
        feature_cache_gb: float = 4.0,
        batch_size: int = 512,
    ) -> None:
        self.block_size, self.rho, self.solver = block_size, rho, solver
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self.feature_cache_gb, self.batch_size = feature_cache_gb, batch_size
        self._features: torch.Tensor | None = None  # (N, D) loss features of the real images
        self.last_stats: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: NeuroSQL) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        stats = self.assign(pl_module, trainer_images(trainer), epoch=trainer.current_epoch)
        self.last_stats = stats
        for name, value in stats.items():
            pl_module.log(f"assign/{name}", value, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def assign(self, module: NeuroSQL, images: torch.Tensor, epoch: int) -> dict[str, float]:
        """One assignment step on all N samples; images (N, C, H, W) in [-1, 1], index-ordered."""
        start = time.perf_counter()
        n = module.num_samples
        if images.shape[0] != n:
            raise ValueError(f"expected {n} training images for the assignment step, got {images.shape[0]}")
        loss_fn, device = module.loss_fn, module.device
        features = self._real_features(loss_fn, images, device)
        lattice = module.lattice
        was_training = module.generator.training
        module.generator.eval()

        def cost_fn(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            fake = torch.cat([module.generator(z) for z in lattice[points.to(device)].split(self.batch_size)])
            x = images[samples].to(device)
            x_feat = features[samples].to(device) if features is not None else None
            return loss_fn.cost_matrix(x, fake, x_features=x_feat)

        try:
            blocks_rng = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            old = module.assignment.cpu()
            new, assigned = block_assignment(old, cost_fn, self.block_size, blocks_rng, self.solver)
        finally:
            module.generator.train(was_training)
        check_permutation(new, n)
        module.assignment = new.to(module.assignment.device)
        module.latents = momentum_update(module.latents, lattice, module.assignment, self.rho)
        return {
            "mean_cost": float(assigned.mean()),
            "frac_changed": float((new != old).float().mean()),
            "time_s": time.perf_counter() - start,
        }

    def _real_features(self, loss_fn, images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """Cached (N, D) features of the real images, or None when they would not fit the budget."""
        if self._features is not None and self._features.shape[0] == images.shape[0]:
            return self._features
        dim = loss_fn.feature_dim(tuple(images.shape[1:]))
        if images.shape[0] * dim * 4 > self.feature_cache_gb * 2**30:
            return None
        self._features = loss_fn.features_batched(images.to(device), batch_size=self.batch_size).cpu()
        return self._features


def trainer_images(trainer: L.Trainer) -> torch.Tensor:
    """All training images of the trainer's datamodule, (N, C, H, W) in [-1, 1], index order."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "train_images"):
        raise TypeError("the assignment step needs a datamodule with a train_images() method")
    return datamodule.train_images()
