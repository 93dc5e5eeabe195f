"""Epoch-boundary assignment step of NeuroSQL, as a Lightning Callback.

Every `every_n_epochs` epochs: split the samples into random blocks of size m, have the
module score each block (`NeuroSQL.block_costs`: C[i, k] = ℓ(X_i, G(Q_k)) over the lattice
points the block holds, in GEMM form from its feature banks where it has them), solve the
block's linear assignment, update π, then Ẑ ← ρ·Q_π + (1−ρ)·Ẑ. Under DDP each rank solves
every world-th block and the results are all-gathered, so all ranks end identical. Logs:
assign/mean_cost (mean assigned cost), assign/frac_changed (fraction of samples whose
lattice point changed), assign/frac_reused (generated features reused from the epoch),
assign/time_s (wall time of the step).
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

import lightning as L
import torch

from .assignment import check_permutation, momentum_update, random_blocks, solve_blocks
from .images import ImageSource, trainer_images

if TYPE_CHECKING:
    from .module import NeuroSQL


class AssignmentCallback(L.Callback):
    """Updates the module's `assignment` (π) and `latents` (Ẑ) at epoch ends.

    `NeuroSQL.configure_callbacks` makes it from the model's settings (block_size, rho, solver,
    assign_every, seed), which hold the defaults and their checks.
    """

    def __init__(self, *, block_size: int, rho: float, solver: str, every_n_epochs: int, seed: int) -> None:
        self.block_size, self.rho, self.solver = block_size, rho, solver
        self.every_n_epochs, self.seed = every_n_epochs, seed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: NeuroSQL) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        stats = self.assign(pl_module, trainer_images(trainer), epoch=trainer.current_epoch, trainer=trainer)
        for name, value in stats.items():
            pl_module.log(f"assign/{name}", value, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def assign(
        self, module: NeuroSQL, images_at: ImageSource, epoch: int, trainer: L.Trainer | None = None
    ) -> dict[str, float]:
        """One assignment step on all N samples; images_at(indices) gives their images in [-1, 1].

        The blocks are drawn from (seed, epoch). With a multi-process `trainer` this rank solves
        every world-th block and gathers the others' results; without one (or with one process)
        it solves all blocks.
        """
        start = time.perf_counter()
        n = module.num_samples
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if world > 1:
            broadcast_buffers(module.generator)
        blocks = random_blocks(n, self.block_size, torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        old = module.assignment.cpu()
        cost_fn = partial(module.block_costs, images_at=images_at)
        result = solve_blocks(old, blocks[rank::world], cost_fn, self.solver, module.costs_per_call(self.block_size))
        samples, points, costs = gather_block_results(trainer, result, blocks, module.device) if world > 1 else result
        new = old.clone()
        new[samples] = points
        check_permutation(new, n)
        reused = module.finish_assignment()
        module.assignment = new.to(module.assignment.device)
        module.latents = momentum_update(module.latents, module.lattice, module.assignment, self.rho)
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
