"""Generators map (B, d) codes to (B, C, H, W) images in [-1, 1] for every supported size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurosql_pl.networks import UPSAMPLES, build_generator, upsample2x


@pytest.mark.parametrize("name, size", [("dcgan", 28), ("dcgan", 32), ("dcgan", 64), ("unet", 32), ("unet", 64), ("unet", 128)])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_output_shape_and_range(name: str, size: int, channels: int, upsample: str) -> None:
    g = build_generator(name, latent_dim=5, image_shape=(channels, size, size), width=8, upsample=upsample)
    out = g(torch.randn(3, 5) * 10)  # large codes still land in [-1, 1]
    assert out.shape == (3, channels, size, size)
    assert out.min() >= -1 and out.max() <= 1
    has_transposed = any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert has_transposed == (upsample == "transposed")


def interior_spread(image: torch.Tensor, border: int) -> float:
    """max − min over the pixels at least `border` away from the edges, per channel, largest."""
    inner = image[..., border:-border, border:-border].flatten(-2)
    return float((inner.amax(-1) - inner.amin(-1)).max())


@pytest.mark.parametrize("seed", range(3))
def test_resize_upsampling_keeps_a_flat_map_flat_and_transposed_makes_a_checkerboard(seed: int) -> None:
    """The checkerboard property of one ×2 layer, whatever its (random) weights: a spatially
    constant input gives a constant interior by resize-convolution, a period-2 pattern by the
    stride-2 transposed convolution (its output parity classes see different kernel taps)."""
    torch.manual_seed(seed)
    flat = torch.randn(1, 6, 1, 1).expand(1, 6, 8, 8)
    resize, transposed = upsample2x(6, 4, "resize"), upsample2x(6, 4, "transposed")
    with torch.no_grad():
        assert interior_spread(resize(flat), border=1) < 1e-5
        out = transposed(flat)
        assert interior_spread(out, border=1) > 1e-2
        inner = out[..., 1:-1, 1:-1]
        assert torch.allclose(inner[..., 2:, 2:], inner[..., :-2, :-2], atol=1e-6)  # periodic, period 2


@pytest.mark.parametrize("size", [28, 64])
def test_the_resize_generator_has_no_checkerboard(size: int) -> None:
    """The whole DCGAN generator with random weights, BatchNorm in eval mode (its initial,
    identity statistics) and a projection that makes a flat coarse map: with resize upsampling
    the image is flat away from the borders (k ×2 stages: 2^k − 1 pixels reach the zero
    padding), with transposed convolutions it is a checkerboard."""
    spread = {}
    for upsample in UPSAMPLES:
        torch.manual_seed(0)
        g = build_generator("dcgan", latent_dim=3, image_shape=(1, size, size), width=8, upsample=upsample).eval()
        with torch.no_grad():
            g.project[0].weight.fill_(0.1)  # a constant code → the same value everywhere on the coarse map
            image = g(torch.ones(1, 3))
        steps = {28: 2, 64: 4}[size]
        spread[upsample] = interior_spread(image, border=2**steps - 1)
    assert spread["resize"] < 1e-5
    assert spread["transposed"] > 1e-3


def test_unet_uses_its_skip_connections() -> None:
    """Zeroing the skip from the coarse encoder changes the output: the skips are wired in."""
    g = build_generator("unet", latent_dim=4, image_shape=(1, 64, 64), width=8).eval()
    z = torch.randn(2, 4)
    out = g(z)
    g.dec0[0].weight.data[:, 8:] = 0  # input channels 8.. of dec0 are the skip from enc0
    assert not torch.allclose(out, g(z))


@pytest.mark.parametrize(
    "name, shape, message",
    [("dcgan", (1, 30, 30), "image_size=30"), ("unet", (1, 28, 28), "multiple of 16"), ("dcgan", (2, 28, 28), "channels"),
     ("dcgan", (1, 28, 32), "square"), ("vit", (1, 28, 28), "unknown generator")],
)
def test_unsupported_shapes_are_refused(name: str, shape: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_generator(name, latent_dim=4, image_shape=shape, width=8)


@pytest.mark.parametrize("name", ["dcgan", "unet"])
def test_unknown_upsampling_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="upsample must be one of"):
        build_generator(name, latent_dim=4, image_shape=(1, 64, 64), width=8, upsample="bilinear")


def test_wrong_code_shape_is_refused() -> None:
    g = build_generator("dcgan", latent_dim=4, image_shape=(1, 28, 28), width=8)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        g(torch.randn(2, 5))
