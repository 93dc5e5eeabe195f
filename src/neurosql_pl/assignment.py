"""Quantile assignment: block-local linear assignment between samples and lattice points.

π is a permutation of the lattice indices 0..N-1 (π(i) = the lattice point sample i holds).
Here a sample is whatever holds one lattice point: an image, or with an oversampled lattice
(`oversampling.py`) one of an image's k codes, so N below is then K = k·N codes.
One assignment step (docs/design.md §1):
  1. split the N sample indices at random into blocks B of size m (the last may be smaller);
  2. the candidates of a block are the lattice points it holds now, K_B = π(B), so π stays a
     permutation of the whole lattice;
  3. solve the |B|×|B| linear assignment problem  min_σ Σ_{i∈B} C[i, σ(i)],
     C[i, k] = ℓ(X_i, G(Q_k)), and set π(B) ← K_B[σ];
  4. momentum:  Ẑ_i ← ρ·Q_π(i) + (1 − ρ)·Ẑ_i.
With m = N this is the global optimum of the assignment problem. Repeating 1–3 with new blocks
(several sweeps) can only lower the total cost Σ_i C[i, π(i)]: each block's current assignment
is one of its candidates. Besides random blocks, `neighbour_blocks` groups samples whose images
are alike (a random-projection tree of their features), so that samples competing for the same
generated images meet in one block.
Multiscale blocks (`multiscale_blocks`, our design) choose the blocks *and* their candidate
points: images and lattice points are bisected together, at equal ranks along a common
direction in the loss's feature space, into N/m pairs (group of m images, cell of m lattice
points); each pair is then solved exactly. This is a new permutation, not a refinement of π.
The initial π is random, or "pca": the images' d leading principal components, whitened,
assigned to the lattice by OT (iterated block assignment on the squared distance).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .images import ImageSource
from .lattice import rank_bisection
from .oversampling import copies_per_image, per_code

SOLVERS = ("exact", "pot", "greedy")
BLOCK_STRATEGIES = ("random", "neighbours", "multiscale")


def check_permutation(assignment: torch.Tensor, num_points: int) -> None:
    """Raise ValueError unless `assignment` (N,) is a permutation of 0..num_points-1."""
    if assignment.shape != (num_points,):
        raise ValueError(f"assignment must have shape ({num_points},), got {tuple(assignment.shape)}")
    counts = torch.bincount(assignment.long().cpu(), minlength=num_points)
    if counts.numel() != num_points or not bool((counts == 1).all()):
        raise ValueError("assignment is not a permutation of the lattice indices")


def solve_lsap(cost: torch.Tensor | np.ndarray, solver: str = "exact") -> np.ndarray:
    """Solve min_σ Σ_i C[i, σ(i)] for a square cost (b, b); returns σ as an int64 array (b,).

    exact: scipy's Jonker–Volgenant `linear_sum_assignment`; pot: `ot.emd` with uniform
    weights (its optimal plan is a permutation matrix); greedy: repeatedly take the cheapest
    remaining (row, column) pair — fast, not optimal.
    """
    c = cost.detach().cpu().double().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cost must be a square matrix, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("cost matrix contains NaN or inf; the loss diverged")
    b = c.shape[0]
    if solver == "exact":
        rows, cols = linear_sum_assignment(c)
        sigma = np.empty(b, dtype=np.int64)
        sigma[rows] = cols
        return sigma
    if solver == "pot":
        import ot

        weights = np.full(b, 1.0 / b)
        plan = ot.emd(weights, weights, c)
        return plan.argmax(axis=1).astype(np.int64)
    if solver == "greedy":
        return _greedy(c)
    raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")


def _greedy(cost: np.ndarray) -> np.ndarray:
    """Greedy matching: take pairs in increasing cost, skipping used rows and columns."""
    b = cost.shape[0]
    sigma = np.full(b, -1, dtype=np.int64)
    col_used = np.zeros(b, dtype=bool)
    assigned = 0
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, k = divmod(int(flat), b)
        if sigma[i] < 0 and not col_used[k]:
            sigma[i], col_used[k] = k, True
            assigned += 1
            if assigned == b:
                break
    return sigma


def _check_block_size(block_size: int) -> None:
    if not 2 <= block_size:
        raise ValueError(f"block_size must be >= 2, got {block_size}")


def random_blocks(num_samples: int, block_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Random partition of 0..N-1 into blocks of `block_size` (the last holds the remainder)."""
    _check_block_size(block_size)
    order = torch.randperm(num_samples, generator=generator)
    return list(order.split(block_size))


CostFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class BlockResult(NamedTuple):
    """What solving some blocks gives, one entry per sample of the blocks (S = Σ|B|)."""

    samples: torch.Tensor  # (S,) sample indices
    points: torch.Tensor  # (S,) their new lattice points
    costs: torch.Tensor  # (S,) their assigned costs C[i, new point]
    held_costs: torch.Tensor  # (S,) their costs before, C[i, π(i)]: the diagonal of each block's cost


def solve_blocks(
    assignment: torch.Tensor,
    blocks: list[torch.Tensor],
    cost_fn: CostFn,
    solver: str = "exact",
    blocks_per_call: int = 1,
) -> BlockResult:
    """Solve the LSAP of each block over the lattice points it holds.

    assignment: (N,) int64 permutation π; blocks: disjoint sample-index tensors.
    cost_fn(samples (k, b), lattice_idx (k, b)) → (k, b, b) costs of k equal-size blocks at once,
    C[j, i, l] = ℓ(X_samples[j, i], G(Q_lattice_idx[j, l])); up to `blocks_per_call` blocks go
    into one call (fewer, larger tensor operations).
    """
    if blocks_per_call < 1:
        raise ValueError(f"blocks_per_call must be >= 1, got {blocks_per_call}")
    groups: list[list[torch.Tensor]] = []  # runs of equal-size blocks (a short block goes alone), ≤ blocks_per_call each
    for block in blocks:
        if groups and len(groups[-1]) < blocks_per_call and len(groups[-1][0]) == len(block):
            groups[-1].append(block)
        else:
            groups.append([block])
    samples_out, points_out, costs_out, held_out = [], [], [], []
    # scipy's and POT's solvers release the GIL: the blocks of a group are solved in parallel
    pool = _lsap_pool()
    for group in groups:
        samples = torch.stack(group)
        candidates = assignment[samples]
        costs = cost_fn(samples, candidates).detach().cpu().double().numpy()  # one conversion per group
        sigmas = pool.map(lambda cost: solve_lsap(cost, solver), costs)
        for block, cand, cost, sigma in zip(samples, candidates, costs, sigmas):
            samples_out.append(block)
            points_out.append(cand[torch.from_numpy(sigma)])
            costs_out.append(torch.from_numpy(cost[np.arange(len(sigma)), sigma]).float())
            held_out.append(torch.from_numpy(np.diagonal(cost).copy()).float())
    if not samples_out:
        empty = torch.empty(0, dtype=torch.long)
        return BlockResult(empty, empty.clone(), torch.empty(0), torch.empty(0))
    return BlockResult(*(torch.cat(t) for t in (samples_out, points_out, costs_out, held_out)))


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _lsap_pool() -> ThreadPoolExecutor:
    """The threads that solve a group's LSAPs, one per torch thread: made once per process and
    thread count (starting new threads at every call cost 0.3 s of a 7 s step at N = 60k)."""
    key = (os.getpid(), max(1, torch.get_num_threads()))  # a forked child makes its own
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="neurosql-lsap")
    return _POOLS[key]


def apply_blocks(assignment: torch.Tensor, result: BlockResult) -> tuple[torch.Tensor, torch.Tensor]:
    """π with the solved blocks' new points, and the assigned cost (N,) — blocks that cover all N."""
    new = assignment.clone()
    new[result.samples] = result.points
    assigned_cost = torch.empty(assignment.shape[0], dtype=torch.float32)
    assigned_cost[result.samples] = result.costs
    return new, assigned_cost


class Candidate(NamedTuple):
    """A way to reassign all samples: blocks solved from a start π (`solve_blocks(start, blocks)`).

    covariates (len(blocks), p) float64, or None: per block, p ≥ 1 cheap predictors of its
    solved cost, the first > 0 and proportional to the block's scale (its cost under `start`, an
    upper bound of the solved cost); `better_candidate` stops a candidate early only when both
    have them.
    """

    start: torch.Tensor
    blocks: list[torch.Tensor]
    covariates: torch.Tensor | None = None


class BetterCandidate(NamedTuple):
    """What `better_candidate` gives: the kept candidate and its solved blocks."""

    index: int  # which candidate was kept
    assignment: torch.Tensor  # (N,) its π
    assigned: torch.Tensor  # (N,) its assigned costs
    totals: list[float]  # per candidate: its exact total cost when all its blocks were solved, else the estimate
    solved: list[float]  # per candidate: the fraction of its blocks solved
    start_totals: list[float]  # per candidate: Σ C[i, start(i)] over its solved blocks' samples


#: Early-stopping settings of `better_candidate`: blocks per candidate per round, blocks each
#: candidate needs solved before any test, and the one-sided error level of each prediction bound.
RACE_ROUND, RACE_MIN_BLOCKS, RACE_ALPHA = 4, 8, 1e-3


def better_candidate(
    candidates: list[Candidate],
    solve: Callable[[int, list[torch.Tensor]], BlockResult],
    generator: torch.Generator,
    round_blocks: int = RACE_ROUND,
    min_blocks: int = RACE_MIN_BLOCKS,
    alpha: float = RACE_ALPHA,
) -> BetterCandidate:
    """The candidate of lower total cost Σ_i C[i, π(i)], without solving the loser's every block.

    Each candidate's blocks are solved in a random order (from `generator`), `round_blocks` per
    candidate per round, by solve(candidate index, blocks). Solving them all and keeping the
    lower total (ties: the first candidate) is the exact answer; a candidate stops early only
    when, with at least `min_blocks` blocks of each solved, the lower prediction bound of its
    total lies above the upper bound of the other's. A total is predicted from the solved
    blocks by a weighted least-squares regression of the blocks' solved costs on their
    covariates, through the origin, with errors proportional to the first covariate (the blocks'
    solved/start ratios vary by a few percent), and each bound is a one-sided Student-t bound
    at level `alpha`: the estimate of the regression coefficients and the remaining blocks' own
    errors both count. On MNIST (N = 10k, m = 256; 20 states of 3 trainings, 20 block orders
    each) no decision differed from the exact one, and 14 % of the blocks of both candidates
    were left unsolved (40 % at epochs where one candidate is clearly the better).
    """
    if len(candidates) < 1:
        raise ValueError("better_candidate needs at least one candidate")
    orders = [torch.randperm(len(c.blocks), generator=generator).tolist() for c in candidates]
    results: list[list[BlockResult]] = [[] for _ in candidates]
    done = [0] * len(candidates)
    costs: list[list[float]] = [[] for _ in candidates]  # solved blocks' totals, in solving order
    active = list(range(len(candidates)))
    can_stop = all(c.covariates is not None for c in candidates)
    while any(done[c] < len(candidates[c].blocks) for c in active):
        for c in active:
            ids = orders[c][done[c] : done[c] + round_blocks]
            if not ids:
                continue
            blocks = [candidates[c].blocks[j] for j in ids]
            result = solve(c, blocks)
            costs[c].extend(_block_totals(result, blocks))
            results[c].append(result)
            done[c] += len(ids)
        if can_stop and len(active) > 1 and all(done[c] >= min(min_blocks, len(candidates[c].blocks)) for c in active):
            bounds = {c: _total_bounds(candidates[c].covariates, orders[c], costs[c], alpha) for c in active}
            lowest_upper = min(high for _, high in bounds.values())
            keep = [c for c in active if bounds[c][0] <= lowest_upper]  # a candidate whose lower bound exceeds another's upper bound stops
            active = keep
    totals = []
    for c, cand in enumerate(candidates):
        if done[c] == len(cand.blocks):
            totals.append(float(sum(costs[c])))
        else:
            totals.append(sum(_total_bounds(cand.covariates, orders[c], costs[c], alpha)) / 2)
    complete = [c for c in active if done[c] == len(candidates[c].blocks)]
    index = min(complete, key=lambda c: (totals[c], c))
    merged = BlockResult(*(torch.cat(parts) for parts in zip(*results[index])))
    assignment, assigned = apply_blocks(candidates[index].start, merged)
    solved = [done[c] / max(1, len(cand.blocks)) for c, cand in enumerate(candidates)]
    start_totals = [float(sum(r.held_costs.double().sum() for r in parts)) for parts in results]
    return BetterCandidate(index, assignment, assigned, totals, solved, start_totals)


def _block_totals(result: BlockResult, blocks: list[torch.Tensor]) -> list[float]:
    """Σ of the assigned costs of `result` in each of `blocks`, matched by sample (any order)."""
    where = torch.empty(int(max(int(b.max()) for b in blocks)) + 1, dtype=torch.long)
    for position, block in enumerate(blocks):
        where[block] = position
    totals = torch.zeros(len(blocks), dtype=torch.float64)
    return totals.index_add_(0, where[result.samples], result.costs.double()).tolist()


def _total_bounds(covariates: torch.Tensor, order: list[int], solved: list[float], alpha: float) -> tuple[float, float]:
    """(lower, upper) one-sided prediction bounds at level alpha of a candidate's total cost from
    its solved blocks' costs (in `order`'s first len(solved) blocks) and every block's covariates."""
    from scipy.special import stdtrit

    x = covariates[order].double().numpy()
    n = len(solved)
    known = float(np.sum(solved))
    if n == len(order):
        return known, known
    y, xs, xr = np.asarray(solved, np.float64), x[:n], x[n:]
    scale = xs[:, 0]
    if not (np.all(scale > 0) and np.all(np.isfinite(x))):
        return -np.inf, np.inf
    for p in range(x.shape[1], 0, -1):  # drop trailing covariates while the fit is degenerate
        if n - p < 3:
            continue
        a = xs[:, :p] / scale[:, None]  # weights 1/scale²: relative errors
        gram = a.T @ a
        if np.linalg.matrix_rank(gram) < p:
            continue
        beta = np.linalg.solve(gram, a.T @ (y / scale))
        s2 = float(np.sum((y / scale - a @ beta) ** 2)) / (n - p)
        g = xr[:, :p].sum(axis=0)
        var = s2 * (float(np.sum(xr[:, 0] ** 2)) + float(g @ np.linalg.solve(gram, g)))
        estimate, half = known + float(g @ beta), float(stdtrit(n - p, 1 - alpha)) * var**0.5
        return estimate - half, estimate + half
    return -np.inf, np.inf


def block_assignment(
    assignment: torch.Tensor,
    cost_fn: CostFn,
    block_size: int,
    generator: torch.Generator,
    solver: str = "exact",
    blocks_per_call: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One assignment sweep over random blocks of `block_size` (see `solve_blocks`).

    Returns (new π (N,), assigned cost (N,)), where assigned cost[i] = C[i, σ(i)] of i's block.
    """
    blocks = random_blocks(assignment.shape[0], block_size, generator)
    return apply_blocks(assignment, solve_blocks(assignment, blocks, cost_fn, solver, blocks_per_call))


def split_direction(points: torch.Tensor, generator: torch.Generator, iters: int = 10) -> torch.Tensor:
    """Direction (p,) of a balanced 2-means split of `points` (n, p), float.

    For two fixed centres c_0, c_1 the best split into equal halves sorts the points by
    x·(c_1 − c_0) and cuts at the median, so balanced 2-means alternates that cut with the
    halves' means, from the leading principal direction (power iteration from a seeded start).
    """
    x = points - points.mean(dim=0)
    v = torch.randn(x.shape[1], generator=generator, dtype=x.dtype)
    for _ in range(8):
        v = x.T @ (x @ v)
        v = v / v.norm().clamp_min(1e-30)
    n, half = x.shape[0], x.shape[0] // 2
    total = x.sum(dim=0)
    low = torch.zeros(n, dtype=torch.bool)
    for _ in range(iters):
        new_low = torch.zeros_like(low)
        # the half of lowest x·v: a selection, O(n), not a sort (30× faster at n = 120k)
        new_low[torch.from_numpy(np.argpartition((x @ v).numpy(), half - 1)[:half])] = True
        if torch.equal(new_low, low):
            break
        low = new_low
        # the halves' means from one product (no copies of the halves): Σ_low x, and Σ_high x = Σ x − Σ_low x
        low_sum = low.to(x.dtype) @ x
        v = (total - low_sum) / (n - half) - low_sum / half
    return v


def feature_projection(
    clouds: list[torch.Tensor], dim: int, generator: torch.Generator, fit_rows: int = 2048
) -> list[torch.Tensor]:
    """The clouds (n_c, F), each centred on its own mean, on the `dim` leading principal
    directions of their union: float32 (n_c, min(dim, F)).

    The directions are fitted on at most `fit_rows` evenly spaced rows of each cloud
    (randomized PCA seeded from `generator`); all rows are then projected a few at a time, so
    that a large float16 feature bank is never copied whole. On MNIST pixel features (N = 4096,
    a generator after 5 epochs) multiscale blocks from 32 principal directions came within 4.2 %
    of the global optimum, from all 784 pixels within 4.1 %, from a random (Johnson–Lindenstrauss)
    projection to 64 dimensions within 6.0 %.
    """
    chunk = max(1, 2**26 // clouds[0].shape[1])  # ≤ 256 MiB of float32 per chunk
    means = [sum(c.float().sum(dim=0) for c in cloud.split(chunk)) / cloud.shape[0] for cloud in clouds]
    fit = torch.cat([
        cloud[torch.linspace(0, cloud.shape[0] - 1, min(fit_rows, cloud.shape[0])).long().unique()].float() - mean
        for cloud, mean in zip(clouds, means)
    ])
    q = min(dim, *fit.shape)
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        _, _, v = torch.pca_lowrank(fit, q=q, center=False, niter=3)
    return [torch.cat([(c.float() - mean) @ v for c in cloud.split(chunk)]) for cloud, mean in zip(clouds, means)]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch's intra-op parallelism off inside (the caller's thread count comes back afterwards).

    For chains of small operations: the QR factorisations of `torch.pca_lowrank` on a (4096, 32)
    sketch took 1–3 ms on one thread and 140–670 ms on two of a 2-core machine that other work
    shared (each of their many parallel regions waits for a thread the scheduler has parked).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def neighbour_blocks(features: torch.Tensor, block_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Blocks of samples with similar features (N, F): the leaves of a balanced random-projection
    tree (`lattice.rank_bisection`: each cell cut at a multiple of block_size along a new random
    direction). The blocks of one sweep partition 0..N-1 like `random_blocks` (the last holds the
    remainder), and a new generator state draws a new tree.

    Used as sweep blocks (candidates = the points the block holds, so a sweep still can only
    lower the total cost), they pit against each other samples that compete for the same
    generated images, where random blocks rarely do.
    """
    _check_block_size(block_size)
    features = features.float()

    def scores(cell: tuple[np.ndarray, ...], depth: int) -> tuple[np.ndarray]:
        v = torch.randn(features.shape[1], generator=generator)
        return ((features[torch.from_numpy(cell[0])] @ v).numpy(),)

    with one_thread():  # many small products and sorts
        leaves = rank_bisection(features.shape[0], block_size, scores, num_clouds=1, whole_leaves=True)
    return [torch.from_numpy(leaf[0]) for leaf in leaves]


def multiscale_blocks(
    real: torch.Tensor, generated: torch.Tensor, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Multiscale blocks: pair groups of similar images with cells of lattice points whose
    generated images are similar to them, N/m pairs of m.

    real (N, F): a feature of each image X_i (rows: sample index); generated (N, F): the same
    feature of each G(Q_k) (rows: lattice index) — the loss's features, or a proxy, best reduced
    by `feature_projection`. Both are bisected together by `lattice.rank_bisection`: in each
    cell, the direction v of a balanced 2-means split of the two clouds, each centred on its
    own mean (a generator that is still blurry or offset is compared on its variation, not its
    mean), orders the images by x·v and the lattice points by g·v, and both are cut at the same
    rank (`lattice.bisection_cut`: m·⌊K/2⌋ for K = ⌈n/m⌉ leaves). Cutting two sorted clouds at
    equal ranks is the exact 1-D optimal transport along v, so each level matches the lower
    (upper) images to the lower (upper) points: the group ↔ cell matching of a small OT
    problem, decided top down. Cost: O(N·F) per level of the log₂(N/m) levels (≤ 18
    matrix-vector products each) and O(N log N) sorts per level.

    Returns (start π (N,), blocks): the samples of each block hold the points of its cell
    under start π (in no particular order), and the blocks are one ordering of 0..N-1 cut into
    runs of block_size (the last shorter); `solve_blocks(start, blocks, ...)` then solves each
    (group, cell) pair exactly.
    """
    n = real.shape[0]
    if generated.shape != real.shape or real.ndim != 2:
        shapes = f"{tuple(real.shape)} and {tuple(generated.shape)}"
        raise ValueError(f"real and generated features must both be (N, F), got {shapes}")
    _check_block_size(block_size)
    x, g = real.float(), generated.float()

    def scores(cell: tuple[np.ndarray, ...], depth: int) -> tuple[np.ndarray, np.ndarray]:
        xs, gs = x[torch.from_numpy(cell[0])], g[torch.from_numpy(cell[1])]
        v = split_direction(torch.cat([xs - xs.mean(dim=0), gs - gs.mean(dim=0)]), generator)
        return (xs @ v).numpy(), (gs @ v).numpy()

    with one_thread():  # many small products and sorts
        leaves = rank_bisection(n, block_size, scores, whole_leaves=True)
    samples = torch.from_numpy(np.concatenate([leaf[0] for leaf in leaves]))
    start = torch.empty(n, dtype=torch.long)
    start[samples] = torch.from_numpy(np.concatenate([leaf[1] for leaf in leaves]))
    return start, list(samples.split(block_size))


def momentum_update(latents: torch.Tensor, lattice: torch.Tensor, assignment: torch.Tensor, rho: float) -> torch.Tensor:
    """Ẑ ← ρ·Q_π + (1 − ρ)·Ẑ; latents (N, d), lattice (N, d), assignment (N,), ρ ∈ (0, 1]."""
    return rho * lattice[assignment] + (1.0 - rho) * latents


def random_assignment(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation π (N,)."""
    return torch.randperm(num_samples, generator=generator)


def pca_scores(
    images_at: ImageSource, num_samples: int, dim: int, fit_size: int = 10_000, chunk: int = 4096, seed: int = 0
) -> torch.Tensor:
    """Whitened scores on the `dim` leading principal components, (N, dim) with unit variance.

    The components are fitted on at most `fit_size` evenly spaced images, then all N images are
    projected `chunk` at a time, so large datasets never sit in memory as floats at once.
    The randomized PCA draws its sketch from `seed`, not from the global random state.
    """
    fit_idx = torch.linspace(0, num_samples - 1, min(fit_size, num_samples)).long().unique()
    x = images_at(fit_idx).reshape(len(fit_idx), -1).double()
    mean = x.mean(dim=0, keepdim=True)
    q = min(dim, x.shape[0], x.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x - mean, q=q, center=False, niter=4)
    components = v[:, :q]
    scores = torch.cat(
        [(images_at(rows).reshape(len(rows), -1).double() - mean) @ components for rows in torch.arange(num_samples).split(chunk)]
    )
    scores = scores / scores.std(dim=0, keepdim=True).clamp_min(1e-12)
    if q < dim:  # fewer components than latent dimensions: pad with zeros
        scores = torch.cat([scores, scores.new_zeros(scores.shape[0], dim - q)], dim=1)
    return scores.float()


def pca_assignment(
    images_at: ImageSource,
    lattice: torch.Tensor,
    generator: torch.Generator,
    block_size: int = 256,
    rounds: int = 10,
    num_images: int | None = None,
) -> torch.Tensor:
    """OT-PCA initial π (K,): assign whitened PCA scores to lattice points by OT.

    The exact N×N OT problem does not scale to N = 60k, so it is approached by `rounds` sweeps
    of random block assignment on the cost ‖s_i − Q_k‖², starting from a random π; each sweep
    can only lower the total cost. With block_size ≥ K it is the exact global OT in one round.
    The result depends only on the inputs and the generator's seed (the PCA uses its initial seed).

    lattice (K, d); num_images N (default K): with K = k·N (`oversampling.py`) the samples are
    the K codes, code v carrying the score of image v mod N, so each image's k codes take k
    lattice points near its score.
    """
    from .costs import pairwise_sq_dists

    num_images = lattice.shape[0] if num_images is None else num_images
    scores = pca_scores(images_at, num_images, lattice.shape[1], seed=generator.initial_seed())
    scores = per_code(scores, copies_per_image(lattice.shape[0], num_images))
    pi = random_assignment(lattice.shape[0], generator)

    def cost_fn(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return pairwise_sq_dists(scores[samples], lattice[points])

    for _ in range(1 if block_size >= lattice.shape[0] else rounds):
        pi, _ = block_assignment(pi, cost_fn, block_size, generator, blocks_per_call=64)
    return pi
