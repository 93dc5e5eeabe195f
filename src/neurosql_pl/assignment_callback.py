"""Epoch-boundary assignment step of NeuroSQL, as a Lightning Callback.

Every `every_n_epochs` epochs: split the samples into blocks of size m, score each block with
the model's cost side (`AssignmentCosts.block_costs`: C[i, k] = ℓ(X_i, G(Q_k)) over the lattice
points the block holds, in GEMM form from the feature banks where there are some), solve the
block's linear assignment, and hand the new π to the model (`apply_assignment`: π, then
Ẑ ← ρ·Q_π + (1−ρ)·Ẑ). With m ≥ N there is one block, the global optimum. With `sweeps` > 1
this is repeated on new blocks, on the costs of one generator (its features computed once per
step where there are feature banks): each sweep can only lower the total cost. The blocks
(`strategy`):
  random      random blocks (`assignment.random_blocks`);
  neighbours  samples whose images are alike (`assignment.neighbour_blocks` on the images'
              features, reduced to FEATURE_DIM principal directions);
  multiscale  the step first builds the multiscale permutation (`assignment.multiscale_blocks`:
              groups of images matched with cells of lattice points, each pair solved exactly)
              and keeps it instead of the first neighbour sweep's result when its total cost is
              lower; the other sweeps are neighbour sweeps from the π kept.
The samples of the step are the model's codes (`oversampling.py`): K = k·N, code v for image
v mod N, so with k > 1 each block is a capacity-k assignment and π (K,) stays a permutation
of the K lattice points; with k = 1 codes are the dataset indices. The LSAP cannot tell an
image's codes apart, so the step ends by giving every code whose image still holds its point
that point again (`oversampling.keep_held_points`), for the momentum update and frac_changed.
Under DDP each rank solves every world-th block and the results are all-gathered, so all ranks
end identical; blocks built from features are rank 0's, broadcast (features computed on
different devices, and their principal directions with different thread counts, may differ in
their last bits, which can move a sample across a cut).

Logs: assign/total_cost (Σ_i C[i, π(i)] after the step) and assign/total_cost_before (the
same for the π before it, from the diagonals of the first sweep's blocks), assign/mean_cost
(their mean per sample), assign/frac_changed (fraction of samples, or codes when k > 1,
whose lattice point changed), assign/frac_reused (generated features reused from the epoch),
assign/time_s (wall time of the step), and with multiscale assign/multiscale_total_cost (the
multiscale π's total, an estimate when it stopped early), assign/multiscale_kept (1 when it was
kept), assign/multiscale_solved and assign/sweep_solved (the fractions of its and the first
sweep's blocks solved before the race between them was decided: `assignment.better_candidate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch

from .assignment import (
    BlockResult,
    Candidate,
    apply_blocks,
    better_candidate,
    feature_projection,
    multiscale_blocks,
    neighbour_blocks,
    random_blocks,
    solve_blocks,
)
from .assignment_costs import AssignmentCosts
from .oversampling import keep_held_points, per_code

#: Principal directions of the features that "neighbours" and "multiscale" blocks are built from.
FEATURE_DIM = 32
_FEATURE_STREAM, _MULTISCALE_STREAM, _RACE_STREAM = 2**31, 2**31 + 1, 2**31 + 2  # random streams; sweep s uses stream s


def step_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """The random generator of one part of an epoch's assignment step: stream s = sweep s's
    blocks. Sweep 0 keeps the seed of single-sweep steps (seed·100003 + epoch), so that
    assign_sweeps=1 draws the blocks it always drew."""
    if stream == 0:
        return torch.Generator().manual_seed(seed * 100_003 + epoch)
    entropy = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


class AssignedModel(Protocol):
    """What the assignment step uses of a model (`NeuroSQL`): π, its cost side, the update."""

    assignment: torch.Tensor  # π (K,) int64: the lattice point each code holds (K = N when k = 1)

    def assignment_costs(self) -> AssignmentCosts:
        """The cost side of the step (ready for it: under DDP with rank 0's generator buffers)."""

    def apply_assignment(self, assignment: torch.Tensor) -> None:
        """Take the new π (K,): π ← assignment, then the momentum update of the codes Ẑ."""

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        """Log a metric (`LightningModule.log`)."""


class AssignmentCallback(L.Callback):
    """Updates the model's π (and through it Ẑ) at epoch ends.

    `NeuroSQL.configure_callbacks` makes it from the model's settings (block_size, solver,
    assign_every, assign_sweeps, block_strategy, seed), which hold the defaults and their checks.
    """

    def __init__(
        self,
        *,
        block_size: int,
        solver: str,
        every_n_epochs: int,
        seed: int,
        sweeps: int = 1,
        strategy: str = "random",
    ) -> None:
        self.block_size, self.solver = block_size, solver
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self.sweeps, self.strategy = sweeps, strategy

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: AssignedModel) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        stats = self.assign(pl_module, epoch=trainer.current_epoch, trainer=trainer)
        for name, value in stats.items():
            pl_module.log(f"assign/{name}", value, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def assign(self, module: AssignedModel, epoch: int, trainer: L.Trainer | None = None) -> dict[str, float]:
        """One assignment step on all K codes of `module` (its N samples when k = 1); returns
        its statistics (see the module docstring).

        The blocks are drawn from (seed, epoch, sweep). With a multi-process `trainer` this rank
        solves every world-th block and gathers the others' results; without one (or with one
        process) it solves all blocks.
        """
        start = time.perf_counter()
        costs = module.assignment_costs()
        n, m = costs.num_codes, self.block_size
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # one block is the global optimum: a single random sweep
        sweeps, strategy = (1, "random") if m >= n else (self.sweeps, self.strategy)
        multiscale = strategy == "multiscale"
        # when every lattice point is scored more than once, its features are computed once for the step
        reused = costs.begin_step(repeated=sweeps > 1 or multiscale)
        per_call = costs.blocks_per_call(min(m, n))

        def solve(pi: torch.Tensor, blocks: list[torch.Tensor]) -> BlockResult:
            result = solve_blocks(pi, blocks[rank::world], costs.block_costs, self.solver, per_call)
            return gather_block_results(trainer, result, blocks, costs.device) if world > 1 else result

        def from_rank0(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return trainer.strategy.broadcast(tensors, src=0) if world > 1 else tensors

        # per code its image's features (and with multiscale per lattice point its generated image's)
        features: list[torch.Tensor] = []
        if strategy != "random":
            real, generated = costs.features(generated=multiscale)
            clouds = [real, generated] if multiscale else [real]
            features = feature_projection(clouds, FEATURE_DIM, step_generator(self.seed, epoch, _FEATURE_STREAM))
            features[0] = per_code(features[0], costs.copies)

        def sweep_blocks(sweep: int) -> list[torch.Tensor]:
            generator = step_generator(self.seed, epoch, sweep)
            if strategy == "random":
                return random_blocks(n, m, generator)
            (order,) = from_rank0(torch.cat(neighbour_blocks(features[0], m, generator)))
            return list(order.split(m))

        stats = {}
        old = module.assignment.cpu()
        pi = old
        for sweep in range(sweeps):
            blocks = sweep_blocks(sweep)
            if sweep == 0 and multiscale:
                pi, assigned = self._sweep_or_multiscale(costs, pi, blocks, features, m, epoch, solve, from_rank0, stats)
                continue
            result = solve(pi, blocks)
            pi, assigned = apply_blocks(pi, result)
            if sweep == 0:
                stats["total_cost_before"] = float(result.held_costs.double().sum())
        costs.end_step()
        pi = keep_held_points(old, pi, costs.num_images)  # k > 1: codes keep the points their image still holds
        module.apply_assignment(pi)
        return {
            "total_cost": float(assigned.double().sum()),
            **stats,
            "mean_cost": float(assigned.mean()),
            "frac_changed": float((pi != old).float().mean()),
            "frac_reused": reused,
            "time_s": time.perf_counter() - start,
        }


    def _sweep_or_multiscale(
        self,
        costs: AssignmentCosts,
        pi: torch.Tensor,
        blocks: list[torch.Tensor],
        features: list[torch.Tensor],
        m: int,
        epoch: int,
        solve: Callable[[torch.Tensor, list[torch.Tensor]], BlockResult],
        from_rank0: Callable[..., tuple[torch.Tensor, ...]],
        stats: dict[str, float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first sweep with multiscale blocks: the lower-total of the neighbour sweep from π
        and the multiscale permutation (`assignment.better_candidate`; ties keep the sweep).
        Both are solved block by block in a random order, and the one that is clearly the worse
        (prediction bounds from its solved blocks, regressed on each block's cost before
        solving) stops early; with the feature banks those costs take one pass over the N
        pairs. Sets total_cost_before, multiscale_total_cost (an estimate when it stopped
        early), multiscale_kept, multiscale_solved and sweep_solved (the fractions of their blocks solved)."""
        ms_start, ms_blocks = multiscale_blocks(*features, m, step_generator(self.seed, epoch, _MULTISCALE_STREAM))
        ms_start, order = from_rank0(ms_start, torch.cat(ms_blocks))
        ms_blocks = list(order.split(m))
        n = len(pi)
        everyone = torch.arange(n)
        held, ms_held = costs.pair_costs(everyone, pi), costs.pair_costs(everyone, ms_start)
        covariates: list[torch.Tensor | None] = [None, None]
        if held is not None and ms_held is not None:
            # rank 0's: every rank then takes the same early decisions from the same gathered results
            held, ms_held = from_rank0(held, ms_held)
            stats["total_cost_before"] = float(held.double().sum())
            covariates = [
                _block_sums(blocks, held)[:, None],
                torch.stack([_block_sums(ms_blocks, ms_held), _block_sums(ms_blocks, held)], dim=1),
            ]
        starts = (pi, ms_start)
        race = better_candidate(
            [Candidate(pi, blocks, covariates[0]), Candidate(ms_start, ms_blocks, covariates[1])],
            lambda c, some: solve(starts[c], some),
            step_generator(self.seed, epoch, _RACE_STREAM),
        )
        if "total_cost_before" not in stats:  # no banks: both solved in full, the sweep's blocks hold π's costs
            stats["total_cost_before"] = race.start_totals[0]
        stats["multiscale_total_cost"] = race.totals[1]
        stats["multiscale_kept"] = float(race.index == 1)
        stats["multiscale_solved"], stats["sweep_solved"] = race.solved[1], race.solved[0]
        return race.assignment, race.assigned


def _block_sums(blocks: list[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """Σ of values (N,) over each block, float64 (len(blocks),)."""
    return torch.stack([values[b].double().sum() for b in blocks])


def gather_block_results(
    trainer: L.Trainer, result: BlockResult, blocks: list[torch.Tensor], device: torch.device
) -> BlockResult:
    """All-gather every rank's block results; identical on all ranks.

    Rank r solved blocks[r::world]; results are padded to the longest rank's length (known to
    every rank from the shared block list) so that one all_gather per tensor suffices.
    """
    world = trainer.world_size
    length = max(sum(len(b) for b in blocks[r::world]) for r in range(world))
    padded = []
    for tensor in result:
        out = torch.full((length,), -1 if tensor.dtype == torch.long else float("nan"), dtype=tensor.dtype)
        out[: len(tensor)] = tensor
        padded.append(trainer.strategy.all_gather(out.to(device)).reshape(-1).cpu())
    keep = padded[0] >= 0
    return BlockResult(*(t[keep] for t in padded))
