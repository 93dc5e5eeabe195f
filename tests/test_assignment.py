"""Specifications of the quantile-assignment step (`neurosql_pl.assignment`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from neurosql_pl.assignment import (
    block_assignment,
    check_permutation,
    momentum_update,
    pca_assignment,
    random_assignment,
    solve_lsap,
)


def full_cost_fn(cost: torch.Tensor):
    """Batched cost_fn over a full (N, N) matrix: C[samples[j, i], points[j, l]]."""
    return lambda samples, points: cost[samples[..., :, None], points[..., None, :]]


def total_cost(cost: torch.Tensor, pi: torch.Tensor) -> float:
    return float(cost[torch.arange(len(pi)), pi].sum())


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
