"""Generators map (B, d) codes to (B, C, H, W) images in [-1, 1] for every supported size."""

from __future__ import annotations

import pytest
import torch

from neurosql_pl.networks import build_generator


@pytest.mark.parametrize("name, size", [("dcgan", 28), ("dcgan", 32), ("dcgan", 64), ("unet", 64), ("unet", 128)])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_and_range(name: str, size: int, channels: int) -> None:
    g = build_generator(name, latent_dim=5, image_shape=(channels, size, size), width=8)
    out = g(torch.randn(3, 5) * 10)  # large codes still land in [-1, 1]
    assert out.shape == (3, channels, size, size)
    assert out.min() >= -1 and out.max() <= 1


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


def test_wrong_code_shape_is_refused() -> None:
    g = build_generator("dcgan", latent_dim=4, image_shape=(1, 28, 28), width=8)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        g(torch.randn(2, 5))
