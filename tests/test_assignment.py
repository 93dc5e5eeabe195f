"""Specifications of the quantile-assignment step (`neurosql_pl.assignment`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from neurosql_pl import NeuroSQL
from neurosql_pl.assignment import (
    Candidate,
    apply_blocks,
    better_candidate,
    block_assignment,
    check_permutation,
    momentum_update,
    multiscale_blocks,
    neighbour_blocks,
    pca_assignment,
    random_assignment,
    random_blocks,
    one_thread,
    solve_blocks,
    solve_lsap,
    split_direction,
)
from neurosql_pl.assignment_callback import AssignmentCallback
from neurosql_pl.assignment_costs import AssignmentCosts
from neurosql_pl.costs import pairwise_sq_dists
from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl.lattice import build_lattice
from neurosql_pl.losses import ReconstructionLoss
from tests.helpers.models import SMALL_NEUROSQL


def full_cost_fn(cost: torch.Tensor):
    """Batched cost_fn over a full (N, N) matrix: C[samples[j, i], points[j, l]]."""
    return lambda samples, points: cost[samples[..., :, None], points[..., None, :]]


def total_cost(cost: torch.Tensor, pi: torch.Tensor) -> float:
    return float(cost[torch.arange(len(pi)), pi].sum())


def optimum(cost: torch.Tensor) -> float:
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost.numpy()[rows, cols].sum())


def multiscale_assignment(
    real: torch.Tensor, generated: torch.Tensor, cost: torch.Tensor, m: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(π, assigned cost) of the multiscale blocks, each (group, cell) pair solved exactly."""
    start, blocks = multiscale_blocks(real, generated, m, gen)
    return apply_blocks(start, solve_blocks(start, blocks, full_cost_fn(cost), blocks_per_call=16))


def fitted_generator_features(n: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a generator that fits its data: g_k = G(Q_k) for a fixed smooth G: R^8 → R^32
    on a Gaussian lattice, and images x_i = G(z_i) + noise with fresh z_i ~ N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(8, 64, generator=gen) / 8**0.5, torch.randn(64, 32, generator=gen) / 8

    def g(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ w1) @ w2

    lattice = build_lattice(n, 8, "cube", "closed_form", seed)
    return g(torch.randn(n, 8, generator=gen)) + noise * torch.randn(n, 32, generator=gen), g(lattice)


@pytest.mark.parametrize("solver", ["exact", "pot", "greedy"])
@pytest.mark.parametrize("block_size", [2, 7, 16, 64])
@pytest.mark.parametrize("blocks_per_call", [1, 3])
def test_pi_stays_a_permutation_after_every_step(solver: str, block_size: int, blocks_per_call: int) -> None:
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(50, 50, generator=gen)
    pi = random_assignment(50, gen)
    for _ in range(3):
        pi, assigned = block_assignment(pi, full_cost_fn(cost), block_size, gen, solver, blocks_per_call)
        check_permutation(pi, 50)
        assert torch.allclose(assigned, cost[torch.arange(50), pi])


def test_global_block_reproduces_scipy_optimum() -> None:
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(40, 40, generator=gen, dtype=torch.float64)
    rows, cols = linear_sum_assignment(cost.numpy())
    optimum = float(cost.numpy()[rows, cols].sum())
    for solver in ("exact", "pot"):
        pi, _ = block_assignment(random_assignment(40, gen), full_cost_fn(cost), 40, gen, solver)
        assert total_cost(cost, pi) == pytest.approx(optimum, rel=1e-12)


def test_batching_blocks_into_one_cost_call_changes_nothing() -> None:
    cost = torch.rand(100, 100, generator=torch.Generator().manual_seed(6))
    start = random_assignment(100, torch.Generator().manual_seed(7))
    one, _ = block_assignment(start, full_cost_fn(cost), 16, torch.Generator().manual_seed(8), blocks_per_call=1)
    many, _ = block_assignment(start, full_cost_fn(cost), 16, torch.Generator().manual_seed(8), blocks_per_call=4)
    assert torch.equal(one, many)


def test_planted_permutation_is_recovered() -> None:
    """Lattice points y_k = x_{τ(k)} + noise: the optimal π is τ⁻¹, found with m = N."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 5, generator=gen)
    tau = torch.randperm(64, generator=gen)
    y = x[tau] + 0.01 * torch.randn(64, 5, generator=gen)
    cost = torch.cdist(x, y) ** 2
    pi, _ = block_assignment(random_assignment(64, gen), full_cost_fn(cost), 64, gen)
    assert torch.equal(tau[pi], torch.arange(64))


def test_block_sweeps_never_increase_the_total_cost() -> None:
    """Each block's current assignment is feasible, so its optimum can only be lower."""
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(200, 200, generator=gen, dtype=torch.float64)
    pi = random_assignment(200, gen)
    previous = total_cost(cost, pi)
    for _ in range(5):
        pi, _ = block_assignment(pi, full_cost_fn(cost), 32, gen)
        now = total_cost(cost, pi)
        assert now <= previous + 1e-9
        previous = now
    assert previous < 0.5 * total_cost(cost, random_assignment(200, gen))


def test_greedy_is_a_matching_no_better_than_optimal() -> None:
    cost = np.random.default_rng(4).random((30, 30))
    sigma = solve_lsap(cost, "greedy")
    assert sorted(sigma.tolist()) == list(range(30))
    assert cost[np.arange(30), sigma].sum() >= cost[np.arange(30), solve_lsap(cost, "exact")].sum() - 1e-12


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        solve_lsap(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        solve_lsap(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown solver"):
        solve_lsap(np.zeros((2, 2)), "hungarian!")
    with pytest.raises(ValueError, match="not a permutation"):
        check_permutation(torch.tensor([0, 0, 2]), 3)
    with pytest.raises(ValueError, match="block_size"):
        block_assignment(torch.arange(4), full_cost_fn(torch.zeros(4, 4)), 1, torch.Generator())


def test_momentum_update_interpolates_towards_assigned_points() -> None:
    lattice = torch.randn(10, 3)
    latents = torch.randn(10, 3)
    pi = torch.randperm(10)
    assert torch.equal(momentum_update(latents, lattice, pi, 1.0), lattice[pi])
    half = momentum_update(latents, lattice, pi, 0.5)
    assert torch.allclose(half, 0.5 * (latents + lattice[pi]))


def test_pca_assignment_puts_similar_images_on_nearby_lattice_points() -> None:
    """Images that differ along one direction get codes ordered along the first lattice axis."""
    gen = torch.Generator().manual_seed(5)
    t = torch.linspace(-1, 1, 128)
    direction = torch.randn(1, 1, 8, 8, generator=gen)
    images = t[:, None, None, None] * direction + 0.01 * torch.randn(128, 1, 8, 8, generator=gen)
    lattice = torch.randn(128, 2, generator=gen)
    pi = pca_assignment(images.__getitem__, lattice, gen, block_size=128)
    check_permutation(pi, 128)
    first = lattice[pi][:, 0]
    corr = torch.corrcoef(torch.stack([first, t]))[0, 1].abs()
    assert corr > 0.9


@pytest.mark.parametrize("blocks", ["random", "neighbours"])
def test_sweeps_lower_the_total_cost_towards_the_global_optimum(blocks: str) -> None:
    """Every sweep's total is at most the last one's, and its held costs are the last π's costs;
    8 sweeps close at least half of one sweep's gap to the global optimum."""
    real, generated = fitted_generator_features(512, seed=0)
    cost = pairwise_sq_dists(real, generated).double()
    gen = torch.Generator().manual_seed(1)
    pi = random_assignment(512, gen)
    totals = [total_cost(cost, pi)]
    for _ in range(8):
        drawn = random_blocks(512, 64, gen) if blocks == "random" else neighbour_blocks(real, 64, gen)
        result = solve_blocks(pi, drawn, full_cost_fn(cost))
        assert torch.allclose(result.held_costs.double(), cost[result.samples, pi[result.samples]].float().double())
        pi[result.samples] = result.points
        check_permutation(pi, 512)
        totals.append(total_cost(cost, pi))
        assert totals[-1] <= totals[-2] * (1 + 1e-6)
    best = optimum(cost)
    assert totals[-1] - best < 0.5 * (totals[1] - best)


def test_neighbour_blocks_partition_the_samples_into_alike_groups() -> None:
    """Blocks of m (the last holds the rest) covering every sample once, a new partition per
    generator state; on well-separated clusters of m samples each block is one cluster."""
    labels = torch.arange(300) % 5
    features = 100 * torch.randn(5, 8, generator=torch.Generator().manual_seed(0))[labels] + torch.randn(300, 8)
    gen = torch.Generator().manual_seed(1)
    first, second = neighbour_blocks(features, 64, gen), neighbour_blocks(features, 64, gen)
    for blocks in (first, second):
        assert [len(b) for b in blocks] == [64] * 4 + [44]
        assert sorted(torch.cat(blocks).tolist()) == list(range(300))
    assert any(not torch.equal(a.sort().values, b.sort().values) for a, b in zip(first, second))
    clustered = neighbour_blocks(features, 60, gen)
    assert all(len(labels[b].unique()) == 1 for b in clustered)


def test_neighbour_sweeps_beat_random_sweeps_for_a_fitted_generator() -> None:
    """Samples that compete for the same generated images meet in a neighbour block: eight
    neighbour sweeps from a random π leave under 60 % of eight random sweeps' gap to the
    global optimum (about 12 % against 28 %)."""
    real, generated = fitted_generator_features(1024, seed=4)
    cost = pairwise_sq_dists(real, generated).double()
    totals = {}
    for name in ("random", "neighbours"):
        gen = torch.Generator().manual_seed(0)
        pi = random_assignment(1024, gen)
        for _ in range(8):
            blocks = random_blocks(1024, 64, gen) if name == "random" else neighbour_blocks(real, 64, gen)
            pi, _ = apply_blocks(pi, solve_blocks(pi, blocks, full_cost_fn(cost), blocks_per_call=16))
        totals[name] = total_cost(cost, pi)
    best = optimum(cost)
    assert totals["neighbours"] - best < 0.6 * (totals["random"] - best)


def test_multiscale_blocks_pair_groups_with_whole_cells() -> None:
    """Blocks of m (the last holds the rest) covering every sample once; each block holds a cell
    of m lattice points under the start π, which is a permutation, and so is the solved π."""
    real, generated = fitted_generator_features(300, seed=2)
    start, blocks = multiscale_blocks(real, generated, 64, torch.Generator().manual_seed(0))
    check_permutation(start, 300)
    assert [len(b) for b in blocks] == [64] * 4 + [44]
    assert sorted(torch.cat(blocks).tolist()) == list(range(300))
    again, _ = multiscale_blocks(real, generated, 64, torch.Generator().manual_seed(0))
    assert torch.equal(start, again)  # seeded
    cost = pairwise_sq_dists(real, generated).double()
    pi, assigned = multiscale_assignment(real, generated, cost, 64, torch.Generator().manual_seed(0))
    check_permutation(pi, 300)
    assert torch.allclose(assigned.double(), cost[torch.arange(300), pi], rtol=1e-6)
    for block in blocks:
        assert set(pi[block].tolist()) == set(start[block].tolist())  # solved within its cell


def test_multiscale_puts_planted_clusters_on_their_lattice_regions() -> None:
    """8 well-separated clusters of images, and a generator that draws cluster j on the j-th
    sector (by angle) of a 2-D lattice: the global optimum keeps every cluster on its sector.
    Multiscale finds it; one sweep of random blocks from a random π is far from it."""
    n, m = 256, 32
    lattice = build_lattice(n, 2, "cube", "closed_form", 0)
    angle = torch.atan2(lattice[:, 1], lattice[:, 0])
    sector = torch.empty(n, dtype=torch.long)
    sector[torch.argsort(angle)] = torch.arange(n) // m  # 8 sectors of 32 points
    gen = torch.Generator().manual_seed(3)
    centres = 10 * torch.randn(8, 16, generator=gen)
    generated = centres[sector] + 0.1 * torch.cat([lattice, torch.zeros(n, 14)], dim=1)
    real = centres[torch.arange(n) % 8] + 0.1 * torch.randn(n, 16, generator=gen)
    cost = pairwise_sq_dists(real, generated).double()
    best = optimum(cost)
    random_pi, _ = block_assignment(random_assignment(n, gen), full_cost_fn(cost), m, gen)
    pi, _ = multiscale_assignment(real, generated, cost, m, torch.Generator().manual_seed(0))
    assert torch.equal(sector[pi], torch.arange(n) % 8)
    assert total_cost(cost, pi) == pytest.approx(best, rel=1e-9)
    assert total_cost(cost, random_pi) > 2 * best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiscale_beats_random_blocks_for_a_fitted_generator(seed: int) -> None:
    """On a generator that fits its data, multiscale's total is below one random sweep's and
    below eight sweeps', within 20 % of the global optimum (one sweep: 76 %, eight: 28 %)."""
    real, generated = fitted_generator_features(1024, seed=seed)
    cost = pairwise_sq_dists(real, generated).double()
    gen = torch.Generator().manual_seed(seed)
    pi = random_assignment(1024, gen)
    sweeps = []
    for _ in range(8):
        pi, _ = block_assignment(pi, full_cost_fn(cost), 64, gen, blocks_per_call=16)
        sweeps.append(total_cost(cost, pi))
    multiscale, _ = multiscale_assignment(real, generated, cost, 64, gen)
    total, best = total_cost(cost, multiscale), optimum(cost)
    assert total <= sweeps[0] and total <= sweeps[-1]
    assert total < 1.2 * best


def test_split_direction_is_the_difference_of_the_halves_means() -> None:
    """Known answer: the direction of balanced 2-means is mean(upper half) − mean(lower half) of
    the cut it converged to (the means come from one product instead of copies of the halves)."""
    points = torch.randn(301, 12, generator=torch.Generator().manual_seed(4)) + 5.0
    v = split_direction(points, torch.Generator().manual_seed(0))
    x = points - points.mean(dim=0)
    low = torch.zeros(301, dtype=torch.bool)
    low[torch.argsort(x @ v)[:150]] = True
    torch.testing.assert_close(v, x[~low].mean(dim=0) - x[low].mean(dim=0), rtol=1e-4, atol=1e-5)


def test_one_thread_restores_the_thread_count() -> None:
    threads = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError), one_thread():
        raise RuntimeError
    assert torch.get_num_threads() == threads


def solved_in_full(cost: torch.Tensor, candidate: Candidate) -> tuple[torch.Tensor, float]:
    """(π, total) of a candidate with all its blocks solved."""
    pi, assigned = apply_blocks(candidate.start, solve_blocks(candidate.start, candidate.blocks, full_cost_fn(cost)))
    return pi, float(assigned.double().sum())


def block_covariates(cost: torch.Tensor, candidate: Candidate) -> torch.Tensor:
    """Per block its cost under the candidate's start, (B, 1) float64."""
    held = cost[torch.arange(len(candidate.start)), candidate.start].double()
    return torch.stack([held[b].sum() for b in candidate.blocks])[:, None]


def test_better_candidate_without_covariates_solves_both_and_keeps_the_lower() -> None:
    """Known answer: with no covariates no candidate stops early; the kept one is the lower of
    the two totals solved in full (ties: the first), with its π and assigned costs."""
    gen = torch.Generator().manual_seed(5)
    cost = torch.rand(256, 256, generator=gen).double()
    candidates = [
        Candidate(random_assignment(256, gen), random_blocks(256, 32, gen)),
        Candidate(random_assignment(256, gen), random_blocks(256, 64, gen)),
    ]
    solved = [solved_in_full(cost, c) for c in candidates]
    result = better_candidate(candidates, lambda c, blocks: solve_blocks(candidates[c].start, blocks, full_cost_fn(cost)), gen)
    best = min((0, 1), key=lambda c: (solved[c][1], c))
    assert result.index == best and result.solved == [1.0, 1.0]
    assert result.totals == pytest.approx([t for _, t in solved], rel=1e-12)
    assert torch.equal(result.assignment, solved[best][0])
    assert float(result.assigned.double().sum()) == pytest.approx(solved[best][1], rel=1e-12)
    assert result.start_totals[0] == pytest.approx(total_cost(cost, candidates[0].start), rel=1e-9)
    twins = [candidates[1], candidates[1]]
    tie = better_candidate(twins, lambda c, blocks: solve_blocks(twins[c].start, blocks, full_cost_fn(cost)), gen)
    assert tie.index == 0


@pytest.mark.parametrize("good", [0, 1])
def test_a_clearly_worse_candidate_stops_early_and_the_better_is_solved_in_full(good: int) -> None:
    """C[i, k] = (i − k)²/N²: blocks of consecutive samples holding their own points' neighbours
    solve close to 0; random blocks from a random π stay far from it. With covariates the worse
    stops after a few rounds; the kept one is the better, its π exactly the one solved in full."""
    n, gen = 2048, torch.Generator().manual_seed(6)
    idx = torch.arange(n, dtype=torch.float64)
    cost = (idx[:, None] - idx[None, :]).square() / n**2
    near = torch.arange(n).view(-1, 32)[:, torch.randperm(32, generator=gen)].flatten()  # shuffled within 32
    candidates = [Candidate(near, list(torch.arange(n).split(32))), Candidate(random_assignment(n, gen), random_blocks(n, 32, gen))]
    if good == 1:
        candidates.reverse()
    candidates = [c._replace(covariates=block_covariates(cost, c)) for c in candidates]
    calls = []

    def solve(c: int, blocks: list[torch.Tensor]):
        calls.append(c)
        return solve_blocks(candidates[c].start, blocks, full_cost_fn(cost))

    result = better_candidate(candidates, solve, gen)
    assert result.index == good
    assert result.solved[good] == 1.0 and result.solved[1 - good] < 0.5
    pi, total = solved_in_full(cost, candidates[good])
    assert torch.equal(result.assignment, pi)
    assert result.totals[good] == pytest.approx(total, rel=1e-12)
    assert result.totals[1 - good] > 10 * total  # its estimate
    assert calls.count(1 - good) < calls.count(good)


@pytest.mark.parametrize("seed", range(6))
def test_better_candidate_takes_the_exact_decision_on_random_costs(seed: int) -> None:
    """Two sweeps of random blocks from one random π on uniform random costs (totals a few
    percent apart, blocks whose gains vary widely; a short last block anywhere in the random
    order): the kept candidate and π are those of solving both in full, and a candidate stops
    early only when the other is far lower."""
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(1000, 1000, generator=gen).double()
    pi = random_assignment(1000, gen)
    candidates = [Candidate(pi, random_blocks(1000, size, gen)) for size in (16, 16 if seed % 2 else 32)]
    candidates = [c._replace(covariates=block_covariates(cost, c)) for c in candidates]
    solved = [solved_in_full(cost, c) for c in candidates]
    best = min((0, 1), key=lambda c: (solved[c][1], c))
    result = better_candidate(candidates, lambda c, blocks: solve_blocks(candidates[c].start, blocks, full_cost_fn(cost)), gen)
    assert result.index == best and torch.equal(result.assignment, solved[best][0])
    if result.solved != [1.0, 1.0]:
        assert solved[1 - best][1] > 1.05 * solved[best][1]


def model_before_an_assignment(data_dir: Path, **overrides) -> tuple[NeuroSQL, MNISTDataModule]:
    """A small NeuroSQL on 64 tiny-MNIST images, with its lattice, a random π and its cost side
    (feature banks), as it stands at an epoch end (the generator is the untrained one: costs
    still differ)."""
    torch.manual_seed(0)  # the same generator weights every time
    model = NeuroSQL(**{**SMALL_NEUROSQL, **overrides}, image_shape=(1, 28, 28), num_samples=64)
    model.lattice = build_lattice(64, 4, "cube", "closed_form", 0)
    model.assignment = random_assignment(64, torch.Generator().manual_seed(0))
    model.latents = model.lattice[model.assignment].clone()
    datamodule = MNISTDataModule(data_dir=str(data_dir), download=False)
    datamodule.setup("fit")
    model.build_assignment_costs(datamodule.train_images)
    return model, datamodule


class Lookup(nn.Module):
    """A generator that draws exactly the data: G(z) = images[k] for the lattice point k nearest z."""

    def __init__(self, lattice: torch.Tensor, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("lattice", lattice)
        self.register_buffer("images", images)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.images[torch.cdist(z, self.lattice).argmin(dim=1)]


def callback_step(
    data_dir: Path, calls: list[int] | None = None, lookup: bool = False, **overrides
) -> dict[str, float]:
    """One assignment step through the model's callback (its stats), after checking that π is a
    permutation and that total_cost is Σ_i C[i, π(i)] recomputed for the new π. `calls` collects
    the number of codes of every generator pass of the step; `lookup` replaces the generator by
    one that draws image τ(k) at lattice point k, for a random permutation τ."""
    model, datamodule = model_before_an_assignment(data_dir, **overrides)
    if lookup:
        tau = torch.randperm(64, generator=torch.Generator().manual_seed(1))
        model.generator = Lookup(model.lattice, datamodule.train_images()[tau])
        model.build_assignment_costs(datamodule.train_images)
    if calls is not None:
        counting = model.generator.register_forward_pre_hook(lambda _net, args: calls.append(len(args[0])))
    (callback,) = model.configure_callbacks()
    stats = callback.assign(model, epoch=0)
    if calls is not None:
        counting.remove()
    check_permutation(model.assignment, 64)
    costs = model.assignment_costs()
    assert costs.fake_bank is None or not costs.fake_bank.filled.any()  # the step's features are forgotten
    pairs = costs.block_costs(torch.arange(64)[None], model.assignment[None])  # one block
    assert stats["total_cost"] == pytest.approx(float(pairs[0].diagonal().double().sum()), rel=1e-5, abs=1e-4)
    assert stats["total_cost"] <= stats["total_cost_before"] * (1 + 1e-6)
    return stats


@pytest.mark.parametrize("feature_cache_gb", [6.0, 0.0])
@pytest.mark.parametrize("strategy", ["random", "neighbours"])
def test_callback_sweeps_lower_the_logged_total_cost(tiny_mnist: Path, feature_cache_gb: float, strategy: str) -> None:
    """From the same π and generator: the first sweep is the same, so the cost before is the
    same; four sweeps end at or below one. With feature banks the generator runs once per
    lattice point however many sweeps there are, in a bank dropped after the step."""
    results = {}
    for sweeps in (1, 4):
        calls = []
        results[sweeps] = callback_step(
            tiny_mnist, calls, assign_sweeps=sweeps, feature_cache_gb=feature_cache_gb, block_strategy=strategy
        )
        assert results[sweeps]["frac_reused"] == 0.0
        if feature_cache_gb > 0:
            assert sum(calls) == 64
    assert results[4]["total_cost_before"] == pytest.approx(results[1]["total_cost_before"], rel=1e-6)
    assert results[4]["total_cost"] <= results[1]["total_cost"] * (1 + 1e-6)


@pytest.mark.parametrize("cost_outputs", ["fresh", "epoch"])
def test_callback_keeps_multiscale_only_when_it_beats_the_first_sweep(tiny_mnist: Path, cost_outputs: str) -> None:
    """Multiscale's step keeps the better of its own π and the first sweep's, so it ends at
    or below both; here also below a random step's. π stays a permutation."""
    random_step = callback_step(tiny_mnist, cost_outputs=cost_outputs)
    stats = callback_step(tiny_mnist, cost_outputs=cost_outputs, block_strategy="multiscale")
    assert stats["multiscale_kept"] in (0.0, 1.0)
    assert 0.0 < stats["sweep_solved"] <= 1.0 and 0.0 < stats["multiscale_solved"] <= 1.0
    assert stats[("sweep_solved", "multiscale_solved")[int(stats["multiscale_kept"])]] == 1.0  # the kept one is solved in full
    assert stats["total_cost"] <= min(stats["multiscale_total_cost"], stats["total_cost_before"]) * (1 + 1e-6)
    assert stats["total_cost_before"] == pytest.approx(random_step["total_cost_before"], rel=1e-6)
    assert stats["total_cost"] <= random_step["total_cost"] * (1 + 1e-6)


def test_callback_keeps_multiscale_when_the_generator_draws_the_data(tiny_mnist: Path) -> None:
    """G(Q_k) = X_τ(k): the images and the generated images are the same cloud, so the joint
    bisection pairs every image's group with the cell drawing it and the blocks solve to the
    zero-cost π = τ⁻¹, which random blocks of 16 from a random π do not reach."""
    random_step = callback_step(tiny_mnist, lookup=True)
    stats = callback_step(tiny_mnist, lookup=True, block_strategy="multiscale", assign_sweeps=2)
    assert random_step["total_cost"] > 1.0
    assert stats["multiscale_kept"] == 1.0
    assert stats["total_cost"] == pytest.approx(0.0, abs=1e-4)


class BareModel:
    """Only what `assignment_callback.AssignedModel` promises: π, a cost side, the update, log."""

    def __init__(self, costs: AssignmentCosts, assignment: torch.Tensor) -> None:
        self.assignment, self.costs, self.applied = assignment, costs, []

    def assignment_costs(self) -> AssignmentCosts:
        return self.costs

    def apply_assignment(self, assignment: torch.Tensor) -> None:
        self.applied.append(assignment)
        self.assignment = assignment

    def log(self, *args, **kwargs) -> None:
        pass


@pytest.mark.parametrize("strategy", ["random", "multiscale"])
def test_the_step_needs_only_the_models_cost_side_and_update(strategy: str) -> None:
    """The callback reaches into nothing else of the model: a bare object with π, an
    `AssignmentCosts` (of a generator drawing 32 random 8×8 images) and `apply_assignment` is
    enough, and the update gets one permutation that lowers the total cost."""
    gen = torch.Generator().manual_seed(0)
    images, lattice = torch.rand(32, 1, 8, 8, generator=gen) * 2 - 1, torch.randn(32, 2, generator=gen)
    drawn = images[torch.randperm(32, generator=gen)]

    def generate(codes: torch.Tensor) -> torch.Tensor:
        return drawn[torch.cdist(codes, lattice).argmin(dim=1)]

    loss = ReconstructionLoss(perceptual=None, pixel="l2")
    costs = AssignmentCosts(loss, lattice, generate, lambda idx: images[idx], (1, 8, 8), "fresh", 1.0, torch.device("cpu"))
    model = BareModel(costs, random_assignment(32, gen))
    callback = AssignmentCallback(block_size=8, solver="exact", every_n_epochs=1, seed=0, sweeps=2, strategy=strategy)
    stats = callback.assign(model, epoch=0)
    (pi,) = model.applied
    check_permutation(pi, 32)
    assert stats["total_cost"] <= stats["total_cost_before"] * (1 + 1e-6)
    assert costs.fake_bank is None  # the step's own bank is dropped (mode "fresh")


@pytest.mark.parametrize("block_size", [64, 100])
def test_a_block_of_all_samples_or_more_gives_the_global_optimum(tiny_mnist: Path, block_size: int) -> None:
    """m ≥ N is one global assignment, whatever the sweeps and block strategy: π is scipy's
    optimum of the whole N×N cost matrix C[i, k] = ℓ(X_i, G(Q_k))."""
    model, _ = model_before_an_assignment(tiny_mnist, block_size=block_size, assign_sweeps=3, block_strategy="multiscale")
    everything = torch.arange(64)[None]
    cost = model.assignment_costs().block_costs(everything, everything)[0].double()
    (callback,) = model.configure_callbacks()
    stats = callback.assign(model, epoch=0)
    rows, cols = linear_sum_assignment(cost.numpy())
    assert torch.equal(model.assignment, torch.from_numpy(cols))
    assert stats["total_cost"] == pytest.approx(float(cost[rows, cols].sum()), rel=1e-6)
    assert "multiscale_kept" not in stats  # one random sweep


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"assign_sweeps": 0}, "assign_sweeps"), ({"block_strategy": "kmeans"}, "block_strategy")],
)
def test_impossible_assignment_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeuroSQL(perceptual=None, **overrides)
