"""Known answers and properties of FID, KID and PRDC (neurosql_pl.distribution_metrics).

Most tests use the small RandomConvFeatures extractor; one computes FID from the real TF-Inception
features of 16 small fixed images, against a recorded value and an independent computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from tests.helpers.feature_sets import blobs, extractor, noisy, pure_noise, real  # noqa: F401 - fixtures
from neurosql_pl import distribution_metrics as D
from neurosql_pl import features as F
from neurosql_pl import sample_metrics as S


# ----------------------------------------------------------------------------- FID / KID / PRDC


def fid_scipy(a: torch.Tensor, b: torch.Tensor) -> float:
    """Independent reference: the textbook formula with scipy's sqrtm."""
    a, b = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_textbook_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=g)
    b = torch.randn(250, 16, generator=g) * 1.5 + 0.3
    assert D.frechet_distance(a, b) == pytest.approx(fid_scipy(a, b), rel=1e-6)
    # two Gaussians with known parameters: FID → ‖Δμ‖² + Σ (σ1 − σ2)² = 16·0.09 + 16·0.25 = 5.44
    a = torch.randn(20000, 16, generator=g)
    b = torch.randn(20000, 16, generator=g) * 1.5 + 0.3
    assert D.frechet_distance(a, b) == pytest.approx(5.44, rel=0.03)
    # the symmetric-eigensolver path gives the same number as torchmetrics, also for rank-deficient
    # covariances (n < D, as with 1000 Inception features of 2048 dimensions)
    c, d = torch.randn(40, 64, generator=g), torch.randn(30, 64, generator=g) * 0.7
    for x, y in ((a[:300], b[:250]), (c, d)):
        expected = D.frechet_distance(x, y)
        assert D.frechet_distance(x, y, method="eigh") == pytest.approx(expected, rel=1e-6)  # low-rank path for (c, d)
        stats_only = [F.FeatureStats.from_features(t, keep_features=False) for t in (x, y)]
        assert D.frechet_distance(*stats_only, method="eigh") == pytest.approx(expected, rel=1e-6)  # full-D path
    with pytest.raises(ValueError, match="unknown FID method"):
        D.frechet_distance(c, d, method="scipy")
    # FeatureStats in place of features gives the same number
    assert D.frechet_distance(F.FeatureStats.from_features(a), b) == pytest.approx(D.frechet_distance(a, b), rel=1e-9)


def test_identical_sets_score_perfectly(extractor, real):
    f = F.extract_features(extractor, real, batch_size=64)
    scale = float(F.FeatureStats.from_features(f).cov.trace())
    fid = D.frechet_distance(f, f)
    assert abs(fid) < 1e-6 * scale
    scores = D.prdc(f, f, k=5)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    assert scores["density"] >= 1.0  # every point lies in its own ball, and usually in others
    kid_mean, _, _ = D.kernel_inception_distance(f, f, subset_size=100, subsets=10)
    assert abs(kid_mean) < 0.05 * D.kernel_inception_distance(f, F.extract_features(extractor, pure_noise(real, 1)), 100, 10)[0]
    d, idx = S.nearest_neighbours(real, real)
    assert torch.equal(d, torch.zeros(len(real)))
    assert torch.equal(idx, torch.arange(len(real)))


def test_noisy_copy_ranks_better_than_noise(extractor, real):
    f_real = F.extract_features(extractor, real)
    close_images, far_images = noisy(real, 0.1, seed=1), pure_noise(real, seed=2)
    close = D.feature_metrics(f_real, F.extract_features(extractor, close_images), kid_subset_size=100, kid_subsets=20)
    far = D.feature_metrics(f_real, F.extract_features(extractor, far_images), kid_subset_size=100, kid_subsets=20)
    assert close["fid"] < far["fid"]
    assert close["kid_mean"] < far["kid_mean"]
    assert close["precision"] > far["precision"]
    assert close["coverage"] > far["coverage"]
    assert far["precision"] == 0.0 and far["coverage"] == 0.0  # noise lies nowhere near the digits
    d_close, idx_close = S.nearest_neighbours(close_images, real)
    d_far, _ = S.nearest_neighbours(far_images, real)
    assert d_close.mean() < 0.2 * d_far.mean()
    # each noisy copy's nearest real image is (almost always) its original, at MSE ≤ σ² = 0.01
    own = (close_images - real).square().flatten(1).mean(1)
    assert (d_close <= own + 1e-7).all() and (idx_close == torch.arange(len(real))).float().mean() > 0.95
    assert 0.004 < d_close.mean() < 0.01


def test_prdc_hand_computed_example():
    # reals on a line at 0..9, k = 1: every radius is 1. Fakes at 0.5 and 100.
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([[0.5], [100.0]])
    s = D.prdc(real, fake, k=1)
    assert s["precision"] == 0.5  # 0.5 is in the balls of 0 and 1; 100 in none
    assert s["density"] == 1.0  # (2 balls + 0) / (k·m = 2)
    assert s["coverage"] == pytest.approx(0.2)  # only reals 0 and 1 have a fake within radius 1
    assert s["recall"] == 1.0  # fake 0.5's radius reaches fake 100 (99.5): recall is outlier-sensitive
    with pytest.raises(ValueError, match="more than k"):
        D.prdc(real[:3], fake, k=3)


def test_kid_subset_size_larger_than_samples_is_clamped_with_warning():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g)
    with pytest.warns(D.KIDSubsetSizeWarning, match="subset_size=1000.*using subset_size=30"):
        mean, std, size = D.kernel_inception_distance(a, b, subset_size=1000, subsets=5)
    assert size == 30 and np.isfinite(mean) and np.isfinite(std)
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.KIDSubsetSizeWarning)
        assert D.kernel_inception_distance(a, b, subset_size=None, subsets=5)[2] == 15  # default: half, no warning
        assert D.kernel_inception_distance(a, b, subset_size=20, subsets=5)[2] == 20
    # same seed, same subsets; the global RNG is left alone
    state = torch.get_rng_state()
    assert D.kernel_inception_distance(a, b, 20, 5, seed=3) == D.kernel_inception_distance(a, b, 20, 5, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="at least 2"):
        D.kernel_inception_distance(a[:1], b, subset_size=None)


# ----------------------------------------------------------------------------- known answer, real TF-Inception

#: FID between the TF-Inception features of the two sets of ``fixed_patterns``, recorded once on a
#: CPU (both FID methods and the scipy reference agree to 2e-7); the tolerance leaves room for
#: other CPUs' float32 convolutions
INCEPTION_FID = 398.5963


def fixed_patterns(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of 8 RGB images (size px, in [-1, 1]) made from formulas, no random numbers:
    sine gratings at 8 orientations, and discs of 8 radii."""
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    gratings, discs = [], []
    for k in range(8):
        theta = k * math.pi / 8
        wave = torch.sin(math.pi * (2 + k % 3) * (x * math.cos(theta) + y * math.sin(theta)))
        gratings.append(torch.stack([wave, wave * (0.5 + 0.05 * k), -wave * 0.5]))
        disc = ((x.square() + y.square()) < (0.2 + 0.1 * k) ** 2).double() * 2 - 1
        discs.append(torch.stack([disc, disc.flip(-1) * 0.8, torch.full_like(disc, -1 + 0.2 * k)]))
    return torch.stack(gratings).float(), torch.stack(discs).float()


def shared_subspace(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (D, k) of the span of both sets' centred features and of their mean
    difference, k = n_a + n_b + 1 ≪ D. FID does not change when both sets are written in it, and
    the general eigensolvers (scipy's sqrtm, torchmetrics) then take milliseconds, not ~30 s."""
    a, b = a.double(), b.double()
    rows = torch.cat([a - a.mean(0), b - b.mean(0), (a.mean(0) - b.mean(0))[None]])
    return torch.linalg.qr(rows.T).Q


@pytest.fixture(scope="module")
def inception_features() -> tuple[torch.Tensor, torch.Tensor]:
    """TF-Inception features (8, 2048) of each set of fixed_patterns (the weights must be installed)."""
    gratings, discs = fixed_patterns()
    features = F.extract_features(F.TFInceptionFeatures(), torch.cat([gratings, discs]), batch_size=16)
    return features[:8], features[8:]


def test_inception_fid_of_fixed_images_is_the_recorded_value(inception_features):
    a, b = inception_features
    assert a.shape == b.shape == (8, 2048)
    fid = D.frechet_distance(a, b, method="eigh")
    assert fid == pytest.approx(INCEPTION_FID, rel=1e-3)
    q = shared_subspace(a, b)
    a_q, b_q = a.double() @ q, b.double() @ q
    assert fid_scipy(a_q, b_q) == pytest.approx(fid, rel=1e-6)  # independent: textbook formula, float64
    assert D.frechet_distance(a_q, b_q, method="torchmetrics") == pytest.approx(fid, rel=1e-6)


@pytest.mark.slow
def test_inception_fid_of_fixed_images_by_torchmetrics_in_all_2048_dimensions(inception_features):
    """torchmetrics' general eigensolver on the full (2048, 2048) covariances: ≈20–40 s on 2 cores."""
    assert D.frechet_distance(*inception_features, method="torchmetrics") == pytest.approx(INCEPTION_FID, rel=1e-3)
