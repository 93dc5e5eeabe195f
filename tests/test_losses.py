"""LPIPS-as-GEMM equals the packages' own pair-by-pair LPIPS; loss validation and plumbing.

No network: lpips-* backends use pretrained_backbone=False (random backbone), and the
missing-weights path patches the download function.
"""

from __future__ import annotations

import functools
import os

import lpips
import pytest
import torch
import torch.nn.functional as F

from neurosql_pl import perceptual as perceptual_mod
from neurosql_pl.losses import ReconstructionLoss
from neurosql_pl.perceptual import (
    PerceptualFeatures,
    PerceptualWeightsMissing,
    build_perceptual,
)

# lpips' random-backbone path calls torchvision with the deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


def _images(n: int, shape=(3, 32, 32), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images so that pairs differ by realistic, not maximal, LPIPS values
    base = torch.rand((n, shape[0], shape[1] // 4, shape[2] // 4), generator=g) * 2 - 1
    up = F.interpolate(base, size=shape[1:], mode="bilinear", align_corners=False)
    return (up + 0.1 * torch.randn((n, *shape), generator=g)).clamp(-1, 1)


def _pairs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, m = x.shape[0], y.shape[0]
    return x.repeat_interleave(m, dim=0), y.repeat(n, 1, 1, 1)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got.double() - ref.double()).abs() / ref.double().abs().clamp_min(1e-12)).max())


def _stlpips_ref(net: str):
    from stlpips_pytorch import stlpips

    return stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False)


@pytest.fixture(scope="module")
def st_alex() -> ReconstructionLoss:
    return ReconstructionLoss(perceptual="stlpips-alex", pixel=None)


# --------------------------------------------------------------- GEMM = package LPIPS
@pytest.mark.parametrize("net, n", [("alex", 8), ("squeeze", 5)])
def test_gemm_cost_equals_lpips_package_random_backbone(net, n):
    torch.manual_seed(0)
    loss = ReconstructionLoss(perceptual=f"lpips-{net}", pixel=None, pretrained_backbone=False)
    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    x, y = _images(n, seed=1), _images(n, seed=2)
    xx, yy = _pairs(x, y)
    with torch.no_grad():
        before = ref(xx, yy).view(n, n)
        ref.load_state_dict(loss.perceptual.metric.state_dict())  # same random backbone
        want = ref(xx, yy).view(n, n)
    assert _rel_err(before, want) > 1e-3  # the backbone really is what matters
    got = loss.cost_matrix(x, y, chunk_size=3)
    assert got.shape == (n, n)
    assert _rel_err(got, want) <= 1e-4
    with torch.no_grad():
        assert _rel_err(loss(xx, yy).view(n, n), want) <= 1e-4


def test_gemm_cost_equals_stlpips_alex_package(st_alex):
    ref = _stlpips_ref("alex")
    x, y = _images(8, seed=3), _images(8, seed=4)
    with torch.no_grad():
        want = ref(*_pairs(x, y)).view(8, 8)
    assert float(want.min()) > 0
    assert _rel_err(st_alex.cost_matrix(x, y), want) <= 1e-4
    feats = st_alex.features_batched(x, batch_size=3)
    assert feats.shape == (8, 36288) and st_alex.feature_dim((3, 32, 32)) == 36288
    assert _rel_err(st_alex.cost_matrix(None, y, x_features=feats), want) <= 1e-4


def test_gemm_cost_equals_stlpips_alex_grey_28px(st_alex):
    ref = _stlpips_ref("alex")
    x, y = _images(6, (1, 28, 28), seed=5), _images(5, (1, 28, 28), seed=6)

    def prep(z):  # the documented input rule: grey → RGB, shorter side < 32 → bilinear to 32
        return F.interpolate(z.repeat(1, 3, 1, 1), size=(32, 32), mode="bilinear", align_corners=False)

    with torch.no_grad():
        want = ref(*_pairs(prep(x), prep(y))).view(6, 5)
    assert _rel_err(st_alex.cost_matrix(x, y), want) <= 1e-4


def test_gemm_cost_equals_stlpips_vgg_package():
    loss = ReconstructionLoss(perceptual="stlpips-vgg", pixel=None)
    ref = loss.perceptual.metric  # the package's own stlpips.LPIPS instance and forward
    assert type(ref).__module__ == "stlpips_pytorch.stlpips"
    x, y = _images(2, seed=7), _images(3, seed=8)
    with torch.no_grad():
        want = ref(*_pairs(x, y)).view(2, 3)
    assert _rel_err(loss.cost_matrix(x, y), want) <= 1e-4


@pytest.mark.parametrize("pixel", ["l2", "l1", "laplacian_l1"])
def test_combined_cost_equals_pairwise_forward(pixel):
    loss = ReconstructionLoss(perceptual="stlpips-alex", perceptual_weight=0.6, pixel=pixel, pixel_weight=2.5)
    x, y = _images(6, seed=9), _images(7, seed=10)
    xx, yy = _pairs(x, y)
    with torch.no_grad():
        want = loss(xx, yy).view(6, 7)
        lp = loss.perceptual.distance(xx, yy).view(6, 7)
        pix = ReconstructionLoss(perceptual=None, pixel=pixel)(xx, yy).view(6, 7)
    torch.testing.assert_close(want, 0.6 * lp + 2.5 * pix, rtol=1e-5, atol=1e-7)
    assert _rel_err(loss.cost_matrix(x, y, chunk_size=4), want) <= 1e-4
    feats = loss.features_batched(x)
    pixel_dims = {"l2": (3 * 32 * 32, 0), "l1": (0, 3 * 32 * 32), "laplacian_l1": (0, 3 * (1024 + 256 + 64 + 16))}
    expected = (36288 + pixel_dims[pixel][0], pixel_dims[pixel][1])
    assert loss.feature_dims((3, 32, 32)) == expected
    assert feats.shape == (6, sum(expected)) == (6, loss.feature_dim((3, 32, 32)))
    assert _rel_err(loss.cost_matrix(None, y, x_features=feats), want) <= 1e-4


@functools.cache
def _mixed_loss(pixel: str, perceptual: str | None) -> ReconstructionLoss:
    torch.manual_seed(0)
    return ReconstructionLoss(perceptual=perceptual, perceptual_weight=0.8, pixel=pixel, pixel_weight=1.7,
                              pretrained_backbone=False)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32)])
@pytest.mark.parametrize("perceptual", [None, "lpips-alex"])
@pytest.mark.parametrize("pixel", ["l2", "l1", "laplacian_l1"])
def test_cost_matrix_is_the_loss_pair_by_pair(pixel, perceptual, shape):
    """For every mix of terms, C[i, k] = loss(x_i, y_k), one pair per call: the GEMM part plus the
    L1 part, from the images or from cached features of x, as one matrix or as a stack of blocks."""
    loss = _mixed_loss(pixel, perceptual)
    x, y = _images(3, shape, seed=14), _images(2, shape, seed=15)
    with torch.no_grad():
        want = torch.stack([torch.cat([loss(x[i : i + 1], y[k : k + 1]) for k in range(2)]) for i in range(3)])
    assert float(want.min()) > 0
    assert _rel_err(loss.cost_matrix(x, y, chunk_size=2), want) <= 1e-4
    fx, fy = loss.features_batched(x), loss.features_batched(y)
    assert _rel_err(loss.cost_matrix(None, y, x_features=fx), want) <= 1e-4
    stacked = loss.cost_from_features(torch.stack([fx[:2], fx[1:]]), torch.stack([fy, fy]), shape)
    assert _rel_err(stacked[0], want[:2]) <= 1e-4 and _rel_err(stacked[1], want[1:]) <= 1e-4
    with torch.no_grad():
        paired = loss.distance_from_features(fx[:2], fy, shape)
    assert _rel_err(paired, want.diagonal()) <= 1e-4


# ---------------------------------------------------------------------- input rules
def test_grey_images_repeat_to_rgb(st_alex):
    x = _images(4, (1, 32, 32), seed=11)
    with torch.no_grad():
        torch.testing.assert_close(st_alex.perceptual(x), st_alex.perceptual(x.repeat(1, 3, 1, 1)))


def test_small_images_resized_and_input_size_option():
    pf = build_perceptual("stlpips-alex")
    assert pf.feature_dim((1, 28, 28)) == pf.feature_dim((3, 32, 32)) == 36288
    assert pf.feature_dim((3, 64, 64)) == 158144
    pf64 = build_perceptual("stlpips-alex", input_size=64)
    assert pf64.feature_dim((1, 28, 28)) == 158144
    with pytest.raises(ValueError, match="input_size"):
        build_perceptual("stlpips-alex", input_size=16)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 32, 32), "shape"),
        (torch.zeros(2, 2, 32, 32), "channels"),
        (torch.zeros(2, 4, 32, 32), "channels"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float"),
        (torch.full((2, 3, 32, 32), 255.0), r"\[-1, 1\]"),
    ],
)
def test_bad_inputs_raise(st_alex, bad, match):
    with pytest.raises(ValueError, match=match):
        st_alex.perceptual(bad)
    with pytest.raises(ValueError, match=match):
        st_alex(bad, bad)


def test_mismatched_pair_shapes_raise(st_alex):
    with pytest.raises(ValueError, match="differ"):
        st_alex(torch.zeros(2, 3, 32, 32), torch.zeros(3, 3, 32, 32))


# --------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(perceptual=None, pixel=None), "no term"),
        (dict(perceptual=None, pixel="l2", pixel_weight=0.0), "no term"),
        (dict(perceptual=None, pixel_weight=-1.0), "pixel_weight"),
        (dict(perceptual_weight=float("nan")), "perceptual_weight"),
        (dict(perceptual="lpips-resnet"), "stlpips-alex"),
        (dict(pixel="l3"), "l1"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReconstructionLoss(**kwargs)


def test_build_perceptual_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        build_perceptual("ssim")
    for name in ("stlpips-alex", "stlpips-vgg", "lpips-alex", "lpips-vgg", "lpips-squeeze"):
        assert name in str(err.value)


def test_negative_head_weight_refused():
    metric = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False)
    with torch.no_grad():
        metric.lins[2].model[-1].weight[0, 5] = -0.1
    with pytest.raises(ValueError, match="negative"):
        PerceptualFeatures(metric, name="lpips-squeeze")


def test_frozen_eval_and_differentiable_wrt_generated(st_alex):
    loss = ReconstructionLoss(perceptual="stlpips-alex", pixel="l2")
    loss.train()
    assert not loss.perceptual.training and not loss.perceptual.metric.training
    assert all(not p.requires_grad for p in loss.parameters())
    fake = _images(4, seed=12).mul(0.9).requires_grad_(True)
    real = _images(4, seed=13)
    out = loss(fake, real)
    assert out.shape == (4,) and torch.all(out > 0)
    out.sum().backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


# ------------------------------------------------------------ missing ImageNet weights
def test_missing_imagenet_backbone_fails_fast_with_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def no_network(url, dst, timeout=None):
        calls.append((url, dst))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(perceptual_mod, "_download_with_timeout", no_network)
    with pytest.raises(PerceptualWeightsMissing) as err:
        ReconstructionLoss(perceptual="lpips-alex")
    msg = str(err.value)
    directory = os.path.join(str(tmp_path), "hub", "checkpoints")
    assert "alexnet-owt-7be5be79.pth" in msg
    assert directory in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert "stlpips-alex" in msg
    assert calls == [(calls[0][0], os.path.join(directory, "alexnet-owt-7be5be79.pth"))]
    assert isinstance(err.value, RuntimeError)


def test_present_imagenet_backbone_file_is_loaded_without_download(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(
        perceptual_mod, "_download_with_timeout", lambda *a, **k: pytest.fail("must not download")
    )
    _, path = perceptual_mod.backbone_weights_path("squeeze")
    assert path == os.path.join(str(tmp_path), "hub", "checkpoints", "squeezenet1_1-b8a52dc0.pth")
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(123)
    fake_imagenet = torchvision.models.squeezenet1_1(weights=None).state_dict()
    torch.save(fake_imagenet, path)
    pf = build_perceptual("lpips-squeeze")
    got = pf.metric.net.slice1[0].weight
    torch.testing.assert_close(got, fake_imagenet["features.0.weight"], rtol=0, atol=0)
