"""The quantile lattice: N fixed points Q_1..Q_N in R^d that discretise N(0, I_d).

Definition (NeuroSQL): Q_k = T(U_k), k = 1..N, where U_1..U_N is a grid that fills a reference
set U_d evenly and T is the optimal-transport (Brenier) map from the uniform law on U_d to
N(0, I_d). Proposition 1 of the paper: if the grid's empirical measure (1/N)·Σ_k δ_{U_k}
converges weakly to Uniform(U_d), then (1/N)·Σ_k δ_{Q_k} converges weakly to N(0, I_d).

Reference grids (`reference_grid`)
----------------------------------
``"cube"``  U_d = (0, 1)^d. d ≥ 2: the first N points of a scrambled Sobol' sequence
            (scipy.stats.qmc.Sobol, 30 bits, seeded), shifted by half a cell (+2^-31) so that no
            coordinate is exactly 0 or 1. d = 1: the regular grid U_k = k/(N+1) (no randomness,
            so the 1-D closed-form lattice is exactly Φ⁻¹(k/(N+1))).
``"ball"``  Hallin's center-outward reference: the *spherical* uniform law on the open unit ball
            (|U| ~ Uniform[0, 1) independent of a uniform direction; not the volume-uniform law).
            Grid: n_R = round(√N) radii j/(n_R+1), j = 1..n_R, times directions. N = n_R·n_S + n_0
            with 0 ≤ n_0 < n_R: every shell gets n_S points and n_0 evenly spread shells get one
            more (Hallin puts the n_0 extra points at the origin; we avoid duplicates). Our
            choice of directions: each shell gets its own directions, so all N points are
            distinct and lie on N distinct rays —
              d ≥ 3: consecutive chunks of one scrambled Sobol' sequence in (0, 1)^d mapped by
                     v ↦ Φ⁻¹(v)/|Φ⁻¹(v)| (uniform on the sphere, low discrepancy);
              d = 2: regular angles 2π(s + δ_j)/n_j, s = 0..n_j−1, with a shell offset
                     δ_j = frac(ρ + j·(√5−1)/2), ρ seeded;
              d = 1: the regular grid U_k = 2k/(N+1) − 1 in (−1, 1).

The map T
---------
``method="closed_form"`` (also the test oracle for POT), both increasing gradients of convex
functions, hence the Brenier maps:
    cube: T(u) = (Φ⁻¹(u_1), ..., Φ⁻¹(u_d));
    ball: T(u) = (u/|u|)·F_{χ_d}⁻¹(|u|), with F_{χ_d}⁻¹(r) = sqrt(2·P⁻¹(d/2, r)) (P the regularised
          lower incomplete gamma function); for d = 1, F_{χ_1}⁻¹(r) = Φ⁻¹((1+r)/2).

``method="pot"`` (default): T is estimated by discrete optimal transport with POT.
  1. Gaussian reference sample Y_1..Y_N: a seeded *quasi*-Monte-Carlo sample of N(0, I_d),
     Y = Φ⁻¹(V) for the first N points V of a second, independently scrambled Sobol' sequence
     (the standard way to draw a low-discrepancy normal sample, as in
     scipy.stats.qmc.MultivariateNormalQMC). An i.i.d. sample would leave O(N^-1/2) noise in the
     lattice's mean, covariance and marginals; the QMC sample has the quality of the closed form.
  2. Exact OT, squared Euclidean cost, uniform weights 1/N on both sides, between {U_k} and {Y_i}.
     Exact `ot.emd` costs O(N^3) (≈ 8 s at N = 4096), so it is solved *multiscale*: both clouds
     are bisected recursively at equal ranks (`rank_bisection`; every cell holds as many grid
     points as sample points) along a feature that T preserves the order of — cube: the coordinates u_j ↔ y_j
     (T is a product of increasing maps); ball: the radius |u| ↔ |y| and the direction cosines
     u_j/|u| ↔ y_j/|y| (T keeps the direction and is increasing in the radius) — cycling
     through the features, until a cell holds ≤ 256 points. At the population level every such
     split is exactly consistent with T, so no transport crosses a cell boundary in the limit;
     in 1-D the result is exactly the global (monotone) OT. In each leaf `ot.emd` gives the plan
     P and the lattice point is the barycentric projection Q_k = Σ_i P_ki Y_i / Σ_i P_ki. With
     equal sizes and uniform weights P is a permutation (a vertex of the Birkhoff polytope), so
     the projection picks one sample point per grid point: the lattice, as a set, is the
     Gaussian sample (its points are distinct) and the OT fixes which grid point gets which.
     No out-of-sample extension is needed since every grid point lies in exactly one leaf.
     Leaves are solved in a thread pool (the network simplex releases the GIL).
  Cost: N/256 problems of ≤ 256 points, i.e. linear in N (N = 60 000, d = 16: a few seconds).
  Per-point agreement with the closed form is close in low d (d = 2: mean |Q_pot − Q_cf| ≈ 5 % of
  the mean norm) but not in high d, where any two N-point discretisations of N(0, I_d) lie far
  apart point by point (a distance ~ N^(-1/d)); what the lattice needs — mean 0, covariance I,
  Gaussian marginals, distinct points — it keeps in every d.

Everything is deterministic given (N, d, reference, method, seed): the grid and the sample use
the numpy SeedSequences [seed, 0] and [seed, 1]. `load_or_build_lattice` caches the float32
(N, d) tensor at ``<cache_dir>/lattice_N{N}_d{d}_{reference}_{method}_s{seed}_v{version}.pt``
(default cache dir ``$XDG_CACHE_HOME/neurosql_pl/lattices``, else
``~/.cache/neurosql_pl/lattices``), written atomically (temporary file + os.replace); a cache
file that cannot be read or does not match is rebuilt with a warning.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import ot
import torch
from scipy import special
from scipy.spatial.distance import cdist
from scipy.stats import qmc

from .files import atomic_writer

__all__ = [
    "REFERENCES",
    "METHODS",
    "reference_grid",
    "closed_form_map",
    "gaussian_reference_sample",
    "pot_map",
    "rank_bisection",
    "bisection_cut",
    "build_lattice",
    "load_or_build_lattice",
    "lattice_cache_path",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

REFERENCES: tuple[str, ...] = ("cube", "ball")
METHODS: tuple[str, ...] = ("pot", "closed_form")

#: Bump when the construction changes, so that old cache files are not reused.
LATTICE_VERSION = 1
#: Largest number of points in one exact `ot.emd` problem of the multiscale solver.
LEAF_SIZE = 256
_SOBOL_BITS = 30
_SOBOL_MAX_DIM = 21201  # scipy's Sobol' direction numbers (Joe & Kuo) stop here
_GRID_STREAM, _SAMPLE_STREAM = 0, 1


# ----------------------------------------------------------------------------- validation
def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed values: {', '.join(map(repr, allowed))}")
    return value


def _validate(num_points, dim, reference, method, seed) -> tuple[int, int, str, str, int]:
    return (
        _check_int("num_points", num_points, 1),
        _check_int("dim", dim, 1, _SOBOL_MAX_DIM),
        _check_choice("reference", reference, REFERENCES),
        _check_choice("method", method, METHODS),
        _check_int("seed", seed, 0),
    )


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


# ----------------------------------------------------------------------------- grids
def _sobol(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """First n points of a scrambled Sobol' sequence in (0,1)^d, float64 (n, d), no 0 or 1."""
    m = max(0, math.ceil(math.log2(n)))
    pts = qmc.Sobol(d, scramble=True, bits=_SOBOL_BITS, rng=rng).random_base2(m)[:n]
    # Sobol' points are multiples of 2^-bits in [0, 1 - 2^-bits]: move to the cell centres.
    return pts + 2.0 ** -(_SOBOL_BITS + 1)


def _ball_grid(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if d == 1:
        return (2.0 * np.arange(1, n + 1) / (n + 1) - 1.0)[:, None]
    n_r = max(1, round(math.sqrt(n)))
    n_s, n_0 = divmod(n, n_r)
    j = np.arange(n_r)
    sizes = n_s + ((j + 1) * n_0) // n_r - (j * n_0) // n_r  # n_0 evenly spread shells get +1
    radii = np.repeat((j + 1) / (n_r + 1), sizes)
    if d == 2:
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        shell = np.repeat(j, sizes)
        offset = (rng.random() + j * (math.sqrt(5.0) - 1.0) / 2.0) % 1.0
        angle = 2.0 * math.pi * (np.arange(n) - starts + offset[shell]) / sizes[shell]
        directions = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    else:
        g = special.ndtri(_sobol(n, d, rng))
        directions = g / np.linalg.norm(g, axis=1, keepdims=True)
    return directions * radii[:, None]


def reference_grid(num_points: int, dim: int, reference: str = "cube", seed: int = 0) -> np.ndarray:
    """The reference grid U_1..U_N as a float64 array (N, d).

    cube: points in the open cube (0, 1)^d (d = 1: exactly k/(N+1), k = 1..N).
    ball: points in the open unit ball, |U_k| ∈ {j/(n_R+1)} (d = 1: exactly 2k/(N+1) − 1).
    Deterministic given the arguments; the seed matters only where the grid is scrambled (d ≥ 2).
    """
    n, d, reference, _, seed = _validate(num_points, dim, reference, "closed_form", seed)
    rng = _rng(seed, _GRID_STREAM)
    if reference == "cube":
        if d == 1:
            return (np.arange(1, n + 1) / (n + 1))[:, None]
        return _sobol(n, d, rng)
    return _ball_grid(n, d, rng)


# ----------------------------------------------------------------------------- closed form
def _chi_quantile(r: np.ndarray, d: int) -> np.ndarray:
    """F_{χ_d}⁻¹(r) for r ∈ [0, 1)."""
    if d == 1:
        return special.ndtri(0.5 + 0.5 * r)
    return np.sqrt(2.0 * special.gammaincinv(0.5 * d, r))


def closed_form_map(u: np.ndarray, reference: str = "cube") -> np.ndarray:
    """Closed-form Brenier map T from Uniform(reference) to N(0, I_d), applied row-wise.

    u: (N, d) array, in the open cube (0, 1)^d for "cube", in the open unit ball for "ball".
    Returns float64 (N, d): cube Φ⁻¹ coordinate-wise; ball (u/|u|)·F_{χ_d}⁻¹(|u|) (0 ↦ 0).
    """
    reference = _check_choice("reference", reference, REFERENCES)
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"u must be a 2-D array (N, d), got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("u must be finite")
    if reference == "cube":
        if u.size and not (u.min() > 0.0 and u.max() < 1.0):
            raise ValueError("cube reference points must lie in the open cube (0, 1)^d")
        return special.ndtri(u)
    r = np.linalg.norm(u, axis=1, keepdims=True)
    if r.size and not r.max() < 1.0:
        raise ValueError("ball reference points must lie in the open unit ball (|u| < 1)")
    scale = np.divide(_chi_quantile(r, u.shape[1]), r, out=np.zeros_like(r), where=r > 0)
    return u * scale


# ----------------------------------------------------------------------------- POT
def gaussian_reference_sample(num_points: int, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded QMC sample of N(0, I_d): Φ⁻¹ of scrambled Sobol' points, float64 (N, d), distinct."""
    n, d, _, _, seed = _validate(num_points, dim, "cube", "pot", seed)
    return special.ndtri(_sobol(n, d, _rng(seed, _SAMPLE_STREAM)))


def _features(x: np.ndarray, reference: str) -> np.ndarray:
    """Columns whose order the Brenier map T preserves (see the module docstring)."""
    if reference == "cube" or x.shape[1] == 1:
        return x
    r = np.linalg.norm(x, axis=1, keepdims=True)
    cosines = np.divide(x, r, out=np.zeros_like(x), where=r > 0)
    return np.concatenate([r, cosines], axis=1)


def bisection_cut(num_points: int, leaf_size: int, whole_leaves: bool = False) -> int | None:
    """Where `rank_bisection` cuts a cell of `num_points` points: the size of its lower part, or
    None for a leaf (num_points ≤ leaf_size). whole_leaves=False cuts in halves (leaves of
    between leaf_size/2 and leaf_size points); True cuts at a multiple of leaf_size, so that every
    leaf holds exactly leaf_size points except the last one, which holds the remainder."""
    if num_points <= leaf_size:
        return None
    if not whole_leaves:
        return num_points // 2
    return leaf_size * (math.ceil(num_points / leaf_size) // 2)


Scores = Callable[[tuple[np.ndarray, ...], int], Sequence[np.ndarray]]


def rank_bisection(
    num_points: int, leaf_size: int, scores: Scores, num_clouds: int = 2, whole_leaves: bool = False
) -> list[tuple[np.ndarray, ...]]:
    """Recursive equal-rank bisection of `num_clouds` clouds of `num_points` points each.

    A cell holds the same number of points of every cloud (one index array per cloud; the root
    holds all). scores(cell, depth) gives one score per point of the cell for each cloud; every
    cloud is sorted by its scores (stably) and all are cut at the same rank (`bisection_cut`),
    so that the lower parts form one cell and the upper parts another. When the scores order
    both clouds as a map between them does (the lattice: coordinates that T keeps the order of;
    the assignment: projections on a common direction), no matched pair is cut apart in the
    limit: a sorted cut is the exact 1-D optimal transport along the scores. Returns the leaves
    in order (lowest scores first), each a tuple of index arrays.
    """
    leaves = []
    stack = [(tuple(np.arange(num_points) for _ in range(num_clouds)), 0)]
    while stack:
        cell, depth = stack.pop()
        h = bisection_cut(len(cell[0]), leaf_size, whole_leaves)
        if h is None:
            leaves.append(cell)
            continue
        ordered = [idx[np.argsort(score, kind="stable")] for idx, score in zip(cell, scores(cell, depth))]
        stack.append((tuple(o[h:] for o in ordered), depth + 1))
        stack.append((tuple(o[:h] for o in ordered), depth + 1))
    return leaves


def _num_workers(jobs: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 16, jobs))


def pot_map(u: np.ndarray, reference: str = "cube", seed: int = 0, leaf_size: int = LEAF_SIZE) -> np.ndarray:
    """Discrete-OT estimate of T on the grid u (N, d): returns the lattice, float64 (N, d).

    Multiscale exact OT (`ot.emd` in leaves of ≤ leaf_size points) between u and
    `gaussian_reference_sample(N, d, seed)`, then barycentric projection; see the module docstring.
    """
    reference = _check_choice("reference", reference, REFERENCES)
    leaf_size = _check_int("leaf_size", leaf_size, 1)
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2 or u.shape[0] < 1:
        raise ValueError(f"u must be a non-empty 2-D array (N, d), got shape {u.shape}")
    n, d = u.shape
    y = gaussian_reference_sample(n, d, seed)
    fu, fy = _features(u, reference), _features(y, reference)

    def scores(cell: tuple[np.ndarray, ...], depth: int) -> tuple[np.ndarray, np.ndarray]:
        j = depth % fu.shape[1]  # cycle through the features
        return fu[cell[0], j], fy[cell[1], j]

    leaves = rank_bisection(n, leaf_size, scores)
    out = np.empty_like(y)

    def solve(leaf: tuple[np.ndarray, np.ndarray]) -> None:
        iu, iy = leaf
        m = len(iu)
        w = np.full(m, 1.0 / m)
        cost = cdist(u[iu], y[iy], "sqeuclidean")  # no BLAS: tiny matmuls thrash its thread pool
        plan = ot.emd(w, w, cost, numItermax=max(100_000, 100 * m * m))
        out[iu] = (plan @ y[iy]) / plan.sum(axis=1, keepdims=True)

    workers = _num_workers(len(leaves))
    if workers == 1:
        for leaf in leaves:
            solve(leaf)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(solve, leaves))  # list() re-raises any worker exception
    return out


# ----------------------------------------------------------------------------- public builders
def build_lattice(num_points: int, dim: int, reference: str = "cube", method: str = "pot", seed: int = 0) -> torch.Tensor:
    """Build the lattice Q_k = T(U_k), k = 1..N: a float32 CPU tensor (N, d), rows ~ N(0, I_d).

    reference ∈ {"cube", "ball"}, method ∈ {"pot", "closed_form"}; deterministic given the arguments.
    """
    n, d, reference, method, seed = _validate(num_points, dim, reference, method, seed)
    start = time.perf_counter()
    u = reference_grid(n, d, reference, seed)
    q = closed_form_map(u, reference) if method == "closed_form" else pot_map(u, reference, seed)
    if not np.all(np.isfinite(q)):  # cannot happen for valid grids; never cache garbage
        raise RuntimeError("lattice construction produced non-finite values")
    log.debug("built lattice N=%d d=%d %s/%s in %.2fs", n, d, reference, method, time.perf_counter() - start)
    return torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/neurosql_pl/lattices`` if XDG_CACHE_HOME is set, else ``~/.cache/neurosql_pl/lattices``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neurosql_pl" / "lattices"


def lattice_cache_path(
    num_points: int, dim: int, reference: str = "cube", method: str = "pot", seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Path of the cache file for these arguments (the file need not exist)."""
    n, d, reference, method, seed = _validate(num_points, dim, reference, method, seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"lattice_N{n}_d{d}_{reference}_{method}_s{seed}_v{LATTICE_VERSION}.pt"


def _meta(n: int, d: int, reference: str, method: str, seed: int) -> dict:
    return {"num_points": n, "dim": d, "reference": reference, "method": method, "seed": seed,
            "version": LATTICE_VERSION}


def _load(path: Path, meta: dict) -> torch.Tensor:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("meta") != meta:
        raise ValueError(f"metadata {payload.get('meta') if isinstance(payload, dict) else None} != {meta}")
    q = payload.get("lattice")
    shape = (meta["num_points"], meta["dim"])
    if not isinstance(q, torch.Tensor) or q.dtype != torch.float32 or tuple(q.shape) != shape:
        raise ValueError(f"expected a float32 tensor of shape {shape}")
    if not torch.isfinite(q).all():
        raise ValueError("non-finite values")
    return q.contiguous()


def load_or_build_lattice(
    num_points: int, dim: int, reference: str = "cube", method: str = "pot", seed: int = 0,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """`build_lattice` with an on-disk cache; returns a float32 CPU tensor (N, d).

    A cache file that is unreadable, corrupt or does not match the arguments is rebuilt (with a
    warning); a cache that cannot be written only warns. See `lattice_cache_path` for the key.
    """
    n, d, reference, method, seed = _validate(num_points, dim, reference, method, seed)
    path = lattice_cache_path(n, d, reference, method, seed, cache_dir)
    meta = _meta(n, d, reference, method, seed)
    if path.exists():
        try:
            return _load(path, meta)
        except Exception as exc:  # corrupt / truncated / foreign file: rebuild, never crash
            warnings.warn(f"lattice cache {path} is unusable ({type(exc).__name__}: {exc}); rebuilding it",
                          RuntimeWarning, stacklevel=2)
    q = build_lattice(n, d, reference, method, seed)
    try:
        with atomic_writer(path) as f:
            torch.save({"meta": meta, "lattice": q}, f)
    except OSError as exc:
        warnings.warn(f"could not write lattice cache {path} ({exc}); continuing without it",
                      RuntimeWarning, stacklevel=2)
    return q
