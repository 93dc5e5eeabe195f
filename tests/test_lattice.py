"""Specification of the quantile lattice (`neurosql_pl.lattice`).

Q_k = T(U_k): a reference grid U_k pushed through the OT map T from Uniform(reference) to
N(0, I_d). Whatever the method, the lattice must be a good discretisation of N(0, I_d).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import special, stats

from neurosql_pl import lattice as L
from neurosql_pl.lattice import (
    build_lattice,
    closed_form_map,
    gaussian_reference_sample,
    lattice_cache_path,
    load_or_build_lattice,
    reference_grid,
)

REFS = ["cube", "ball"]
METHODS = ["closed_form", "pot"]


def assert_discretises_standard_normal(q, mean_tol: float, cov_tol: float, ks_tol: float) -> None:
    """Empirical mean ≈ 0, covariance ≈ I and every marginal close to N(0, 1) (Kolmogorov distance)."""
    q = np.asarray(q, dtype=np.float64)
    n, d = q.shape
    mean_err = np.abs(q.mean(axis=0)).max()
    cov_err = np.abs(np.cov(q, rowvar=False).reshape(d, d) - np.eye(d)).max()
    ks = max(stats.kstest(q[:, j], "norm").statistic for j in range(d))
    assert mean_err < mean_tol, f"|mean| = {mean_err:.4f} >= {mean_tol}"
    assert cov_err < cov_tol, f"max |cov - I| = {cov_err:.4f} >= {cov_tol}"
    assert ks < ks_tol, f"max marginal KS distance = {ks:.4f} >= {ks_tol}"


MOMENT_TOL = dict(mean_tol=0.02, cov_tol=0.05, ks_tol=0.01)


@pytest.fixture(scope="module")
def lattices_10k_d8():
    return {(r, m): build_lattice(10_000, 8, r, m, seed=0) for r in REFS for m in METHODS}


@pytest.fixture(scope="module")
def lattices_2k_d2():
    return {(r, m): build_lattice(2_000, 2, r, m, seed=0) for r in REFS for m in METHODS}


# ----------------------------------------------------------------------------- distribution
@pytest.mark.parametrize("reference", REFS)
@pytest.mark.parametrize("method", METHODS)
def test_lattice_discretises_standard_normal(lattices_10k_d8, reference, method):
    q = lattices_10k_d8[reference, method]
    assert q.dtype == torch.float32 and q.shape == (10_000, 8)
    assert torch.isfinite(q).all()
    assert_discretises_standard_normal(q.numpy(), **MOMENT_TOL)


def test_moment_check_rejects_broken_maps(lattices_10k_d8):
    """The tolerances above are tight enough to catch a missing map or a wrong scale."""
    u = reference_grid(10_000, 8, "cube", seed=0)
    good = lattices_10k_d8["cube", "closed_form"].double().numpy()
    for broken in (u, u - 0.5, 1.1 * good, 0.9 * good, good + 0.05):
        with pytest.raises(AssertionError):
            assert_discretises_standard_normal(broken, **MOMENT_TOL)
    # A Gaussian sample of this size made of i.i.d. noise is also worse than the lattice.
    iid = np.random.default_rng(0).standard_normal((10_000, 8))
    with pytest.raises(AssertionError):
        assert_discretises_standard_normal(iid, mean_tol=0.005, cov_tol=0.01, ks_tol=0.002)
    assert_discretises_standard_normal(good, mean_tol=0.005, cov_tol=0.01, ks_tol=0.002)


@pytest.mark.parametrize("reference", REFS)
@pytest.mark.parametrize("method", METHODS)
def test_lattice_points_are_distinct(lattices_10k_d8, reference, method):
    q = lattices_10k_d8[reference, method]
    assert len(torch.unique(q, dim=0)) == len(q)


# ----------------------------------------------------------------------------- POT vs closed form
@pytest.mark.parametrize("reference", REFS)
def test_pot_map_is_close_to_closed_form_in_low_dim(lattices_2k_d2, reference):
    qp = lattices_2k_d2[reference, "pot"].double()
    qc = lattices_2k_d2[reference, "closed_form"].double()
    typical_norm = qc.norm(dim=1).mean()
    per_point = (qp - qc).norm(dim=1).mean()
    assert per_point < 0.1 * typical_norm, f"mean |Q_pot - Q_cf| = {per_point:.3f}, typical norm {typical_norm:.3f}"
    # ... while a lattice with the right law but the wrong pairing is far from it:
    shuffled = qp[torch.randperm(len(qp), generator=torch.Generator().manual_seed(0))]
    assert (shuffled - qc).norm(dim=1).mean() > 0.8 * typical_norm
    # Marginals agree: sorted coordinates (empirical quantile functions) are close.
    gap = (qp.sort(dim=0).values - qc.sort(dim=0).values).abs().mean(dim=0).max()
    assert gap < 0.03


@pytest.mark.parametrize("reference", REFS)
def test_pot_map_is_sane_in_higher_dim(lattices_10k_d8, reference):
    qp = lattices_10k_d8[reference, "pot"].double()
    qc = lattices_10k_d8[reference, "closed_form"].double()
    gap = (qp.sort(dim=0).values - qc.sort(dim=0).values).abs().mean(dim=0).max()
    assert gap < 0.02, f"marginal quantile gap {gap:.4f}"
    # Point by point two 10k-point discretisations of N(0, I_8) cannot be close, but the OT
    # pairing must still beat an arbitrary pairing of the same points by a wide margin.
    per_point = (qp - qc).norm(dim=1).mean()
    shuffled = qp[torch.randperm(len(qp), generator=torch.Generator().manual_seed(0))]
    assert per_point < 0.5 * (shuffled - qc).norm(dim=1).mean()


def test_pot_lattice_is_a_permutation_of_the_gaussian_sample():
    """Equal sizes, uniform weights: each grid point gets exactly one sample point."""
    q = build_lattice(3_000, 3, "cube", "pot", seed=5).double().numpy()
    y = gaussian_reference_sample(3_000, 3, seed=5)
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(q), order(y), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- 1-D
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_one_dim_closed_form_is_exactly_the_normal_quantiles(n):
    expected = torch.from_numpy(special.ndtri(np.arange(1, n + 1) / (n + 1)).astype(np.float32))[:, None]
    assert torch.equal(build_lattice(n, 1, "cube", "closed_form"), expected)
    torch.testing.assert_close(build_lattice(n, 1, "ball", "closed_form"), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("reference", REFS)
def test_one_dim_pot_is_the_exact_monotone_ot_and_close_to_quantiles(reference):
    n = 1000
    q = build_lattice(n, 1, reference, "pot", seed=3).double().numpy()[:, 0]
    y = gaussian_reference_sample(n, 1, seed=3)[:, 0]
    np.testing.assert_allclose(q, np.sort(y), rtol=0, atol=1e-6)  # the 1-D OT map is the sorting
    assert np.all(np.diff(q) > 0)
    err = np.abs(q - special.ndtri(np.arange(1, n + 1) / (n + 1)))
    assert err.mean() < 0.01
    assert err[10:-10].max() < 0.1  # the extreme order statistics are noisier


# ----------------------------------------------------------------------------- grids and closed form
def test_cube_grid_fills_open_cube():
    u = reference_grid(5_000, 6, "cube", seed=1)
    assert u.shape == (5_000, 6) and u.dtype == np.float64
    assert u.min() > 0 and u.max() < 1
    assert np.abs(u.mean(axis=0) - 0.5).max() < 0.01
    # Each coordinate is stratified: every bin of width 1/50 holds ≈ 100 points.
    counts = np.stack([np.histogram(u[:, j], bins=50, range=(0, 1))[0] for j in range(6)])
    assert np.abs(counts - 100).max() <= 10


@pytest.mark.parametrize("n, d", [(1000, 2), (1000, 5), (997, 3), (3, 4)])
def test_ball_grid_is_hallins_center_outward_grid(n, d):
    u = reference_grid(n, d, "ball", seed=0)
    assert u.shape == (n, d)
    r = np.linalg.norm(u, axis=1)
    assert r.max() < 1
    n_r = max(1, round(np.sqrt(n)))
    radii, counts = np.unique(np.round(r * (n_r + 1), 9), return_counts=True)
    np.testing.assert_allclose(radii, np.arange(1, n_r + 1), atol=1e-6)  # radii j/(n_R+1)
    assert counts.max() - counts.min() <= 1  # equal shells, remainder spread evenly
    assert len(np.unique(u, axis=0)) == n


def test_ball_grid_directions_are_uniform():
    u = reference_grid(20_000, 4, "ball", seed=0)
    s = u / np.linalg.norm(u, axis=1, keepdims=True)
    assert np.abs(s.mean(axis=0)).max() < 0.01
    assert np.abs(s.T @ s / len(s) - np.eye(4) / 4).max() < 0.01


def test_closed_form_map_formulas():
    u = np.array([[0.5, 0.975], [0.025, 0.5]])
    np.testing.assert_allclose(closed_form_map(u, "cube"), [[0, 1.959964], [-1.959964, 0]], atol=1e-6)
    d = 3
    v = np.array([[0.3, 0.0, 0.4], [0.0, 0.0, 0.0]])  # |v| = 0.5 and the centre
    q = closed_form_map(v, "ball")
    np.testing.assert_allclose(np.linalg.norm(q[0]), stats.chi(d).ppf(0.5), rtol=1e-10)
    np.testing.assert_allclose(q[0] / np.linalg.norm(q[0]), v[0] / 0.5, rtol=1e-10)
    np.testing.assert_array_equal(q[1], 0.0)


def test_closed_form_map_rejects_points_outside_the_reference():
    with pytest.raises(ValueError, match="open cube"):
        closed_form_map(np.array([[0.0, 0.5]]), "cube")
    with pytest.raises(ValueError, match="unit ball"):
        closed_form_map(np.array([[0.8, 0.8]]), "ball")
    with pytest.raises(ValueError, match="2-D"):
        closed_form_map(np.array([0.5]), "cube")


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("reference", REFS)
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_lattice_other_seed_other_lattice(reference, method):
    a = build_lattice(1_500, 4, reference, method, seed=7)
    assert torch.equal(a, build_lattice(1_500, 4, reference, method, seed=7))
    assert not torch.allclose(a, build_lattice(1_500, 4, reference, method, seed=8))


def test_one_dim_closed_form_does_not_depend_on_the_seed():
    assert torch.equal(build_lattice(100, 1, "cube", "closed_form", 0), build_lattice(100, 1, "cube", "closed_form", 9))


@pytest.mark.parametrize("reference", REFS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, d", [(1, 1), (1, 3), (2, 2), (5, 1), (3, 7)])
def test_tiny_lattices(reference, method, n, d):
    q = build_lattice(n, d, reference, method)
    assert q.shape == (n, d) and q.dtype == torch.float32 and torch.isfinite(q).all()


# ----------------------------------------------------------------------------- cache
def test_cache_round_trip_loads_identical_tensor_without_rebuilding(tmp_path, monkeypatch):
    first = load_or_build_lattice(2_000, 5, "ball", "pot", seed=2, cache_dir=tmp_path)
    path = lattice_cache_path(2_000, 5, "ball", "pot", 2, tmp_path)
    assert path.is_file() and path.parent == tmp_path
    assert all(part in path.name for part in ("N2000", "d5", "ball", "pot", "s2"))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind
    monkeypatch.setattr(L, "build_lattice", lambda *a, **k: pytest.fail("rebuilt instead of loading"))
    second = load_or_build_lattice(2_000, 5, "ball", "pot", seed=2, cache_dir=str(tmp_path))
    assert second.dtype == torch.float32 and torch.equal(first, second)


def test_cache_is_keyed_by_every_argument(tmp_path):
    base = dict(num_points=300, dim=3, reference="cube", method="closed_form", seed=0)
    paths = {lattice_cache_path(**base, cache_dir=tmp_path)}
    for key, value in [("num_points", 301), ("dim", 4), ("reference", "ball"), ("method", "pot"), ("seed", 1)]:
        paths.add(lattice_cache_path(**{**base, key: value}, cache_dir=tmp_path))
    assert len(paths) == 6


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(b"not a torch file"),
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated write
        lambda p: torch.save({"meta": torch.load(p)["meta"], "lattice": torch.zeros(3, 3)}, p),  # wrong shape
        lambda p: torch.save(torch.zeros(500, 3), p),  # foreign format
    ],
    ids=["garbage", "truncated", "wrong-shape", "foreign"],
)
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, corrupt):
    good = load_or_build_lattice(500, 3, "cube", "pot", cache_dir=tmp_path)
    path = lattice_cache_path(500, 3, "cube", "pot", 0, tmp_path)
    corrupt(path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = load_or_build_lattice(500, 3, "cube", "pot", cache_dir=tmp_path)
    assert torch.equal(rebuilt, good)
    assert torch.equal(L._load(path, L._meta(500, 3, "cube", "pot", 0)), good)  # file repaired


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    with pytest.warns(RuntimeWarning, match="could not write"):
        q = load_or_build_lattice(50, 2, "cube", "closed_form", cache_dir=blocker / "sub")
    assert torch.equal(q, build_lattice(50, 2, "cube", "closed_form"))


def test_default_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert L.default_cache_dir() == tmp_path / "neurosql_pl" / "lattices"
    load_or_build_lattice(40, 2, "cube", "closed_form")
    assert lattice_cache_path(40, 2, "cube", "closed_form", 0).parent == tmp_path / "neurosql_pl" / "lattices"
    assert lattice_cache_path(40, 2, "cube", "closed_form", 0).is_file()


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_points=0), "num_points must be an integer >= 1"),
        (dict(num_points=-5), "num_points must be an integer >= 1"),
        (dict(num_points=2.5), "num_points must be an integer"),
        (dict(num_points=True), "num_points must be an integer"),
        (dict(dim=0), "dim must be an integer >= 1"),
        (dict(dim=30_000), "dim must be <= 21201"),
        (dict(reference="sphere"), "unknown reference 'sphere'; allowed values: 'cube', 'ball'"),
        (dict(method="sinkhorn"), "unknown method 'sinkhorn'; allowed values: 'pot', 'closed_form'"),
        (dict(seed=-1), "seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs, message):
    args = dict(num_points=10, dim=2, reference="cube", method="pot", seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        build_lattice(**args)
    with pytest.raises(ValueError, match=message):
        load_or_build_lattice(**args, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_numpy_integers_are_accepted():
    q = build_lattice(np.int64(10), np.int32(2), "cube", "closed_form", np.int64(0))
    assert q.shape == (10, 2)


# ----------------------------------------------------------------------------- full size
# (build and load times are measured by `make bench`, not asserted here)
def test_full_size_lattice_discretises_the_gaussian_and_round_trips_the_cache(tmp_path):
    q = load_or_build_lattice(60_000, 16, "cube", "pot", cache_dir=tmp_path)
    assert torch.equal(load_or_build_lattice(60_000, 16, "cube", "pot", cache_dir=tmp_path), q)
    assert_discretises_standard_normal(q.numpy(), mean_tol=0.005, cov_tol=0.01, ks_tol=0.002)
    assert os.path.getsize(lattice_cache_path(60_000, 16, "cube", "pot", 0, tmp_path)) < 5 * 2**20
