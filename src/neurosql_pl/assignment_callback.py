"""Epoch-boundary assignment step of NeuroSQL, as a Lightning Callback.

Every `every_n_epochs` epochs: split the samples into random blocks of size m, build each
block's cost C[i, k] = ℓ(X_i, G(Q_k)) over the lattice points it holds (GEMM form, see
`costs.py`), solve the block's linear assignment, update π, then Ẑ ← ρ·Q_π + (1−ρ)·Ẑ.
Features come from the module's banks where it has them (see `feature_bank.py`). Logs:
assign/mean_cost (mean assigned cost), assign/frac_changed (fraction of samples whose
lattice point changed), assign/frac_reused (generated features reused from the epoch),
assign/time_s (wall time of the step).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import lightning as L
import torch

from .assignment import check_permutation, momentum_update, random_blocks, solve_blocks
from .costs import pairwise_sq_dists
from .images import ImageSource, trainer_images

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
        batch_size: int = 512,
    ) -> None:
        self.block_size, self.rho, self.solver = block_size, rho, solver
        self.every_n_epochs, self.seed, self.batch_size = every_n_epochs, seed, batch_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: NeuroSQL) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        stats = self.assign(pl_module, trainer_images(trainer), epoch=trainer.current_epoch)
        for name, value in stats.items():
            pl_module.log(f"assign/{name}", value, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def assign(self, module: NeuroSQL, images_at: ImageSource, epoch: int) -> dict[str, float]:
        """One assignment step on all N samples; images_at(indices) gives their images in [-1, 1].

        Costs come from the module's feature banks where it has them (real features cached at
        fit start; generated features recorded during the epoch when cost_outputs="epoch"),
        from fresh generator and loss-network passes otherwise.
        """
        start = time.perf_counter()
        n = module.num_samples
        loss_fn, device, lattice = module.loss_fn, module.device, module.lattice
        real_bank, fake_bank = module.real_bank, module.fake_bank
        was_training = module.generator.training
        module.generator.eval()

        def generate(points: torch.Tensor) -> torch.Tensor:
            return torch.cat([module.generator(z) for z in lattice[points.to(device)].split(self.batch_size)])

        def fake_features(points: torch.Tensor) -> torch.Tensor:
            recorded = fake_bank.filled[points] if fake_bank is not None else torch.zeros(len(points), dtype=torch.bool)
            feats = torch.empty(len(points), real_bank.values.shape[1], device=device)
            if recorded.any():
                feats[recorded.to(device)] = fake_bank.get(points[recorded], device)
            if not recorded.all():
                fresh = generate(points[~recorded])
                feats[(~recorded).to(device)] = loss_fn.features_batched(fresh, self.batch_size)
            return feats

        def cost_fn(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            """(k, b) samples and lattice points → (k, b, b) costs."""
            k, b = samples.shape
            if real_bank is not None:
                x = real_bank.get(samples.flatten(), device).view(k, b, -1)
                return pairwise_sq_dists(x, fake_features(points.flatten()).view(k, b, -1))
            return torch.stack(
                [
                    loss_fn.cost_matrix(images_at(s).to(device), generate(p), batch_size=self.batch_size)
                    for s, p in zip(samples, points)
                ]
            )

        # stack blocks into one batched GEMM while their features stay under ~256 MiB
        dim = real_bank.values.shape[1] if real_bank is not None else 1
        blocks_per_call = max(1, 2**28 // (2 * self.block_size * dim * 4)) if real_bank is not None else 1
        trainer = module._trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if world > 1:
            broadcast_buffers(module.generator)
        blocks = random_blocks(n, self.block_size, torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        old = module.assignment.cpu()
        try:  # each rank solves every world-th block; the results are all-gathered
            result = solve_blocks(old, blocks[rank::world], cost_fn, self.solver, blocks_per_call)
        finally:
            module.generator.train(was_training)
        samples, points, costs = gather_block_results(trainer, result, blocks, device) if world > 1 else result
        new = old.clone()
        new[samples] = points
        check_permutation(new, n)
        reused = float(fake_bank.filled.float().mean()) if fake_bank is not None else 0.0
        if fake_bank is not None:
            fake_bank.clear()
        module.assignment = new.to(module.assignment.device)
        module.latents = momentum_update(module.latents, lattice, module.assignment, self.rho)
        return {
            "mean_cost": float(costs.mean()),
            "frac_changed": float((new != old).float().mean()),
            "frac_reused": reused,
            "time_s": time.perf_counter() - start,
        }


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP re-broadcasts them only at the next forward pass; without this each rank would score
    its blocks with its own, slightly different, eval-mode generator.
    """
    for buffer in module.buffers():
        torch.distributed.broadcast(buffer, src=0)


def gather_block_results(
    trainer: L.Trainer,
    result: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    blocks: list[torch.Tensor],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-gather every rank's (samples, new lattice points, costs); identical on all ranks.

    Rank r solved blocks[r::world]; results are padded to the longest rank's length (known to
    every rank from the shared block list) so that one all_gather per tensor suffices.
    """
    world = trainer.world_size
    length = max(sum(len(b) for b in blocks[r::world]) for r in range(world))
    padded = []
    for tensor, fill in zip(result, (-1, -1, float("nan"))):
        out = torch.full((length,), fill, dtype=tensor.dtype)
        out[: len(tensor)] = tensor
        padded.append(trainer.strategy.all_gather(out.to(device)).reshape(-1).cpu())
    keep = padded[0] >= 0
    return padded[0][keep], padded[1][keep], padded[2][keep]
