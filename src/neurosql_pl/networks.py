"""Generator networks G_θ: R^d → images in [-1, 1].

`DCGANGenerator` follows Radford et al. (2016): a linear projection of the code to a coarse
s₀×s₀ map, then stride-2 transposed convolutions (BatchNorm + ReLU) that double the
resolution and halve the width, the last one to the output channels, then tanh.
s₀ ∈ {4, …, 7} is chosen so that s₀·2^k equals the image size (28 = 7·2², 32 = 4·2³, 64 = 4·2⁴).
"""

from __future__ import annotations

import torch
from torch import nn


def _coarse_size(image_size: int) -> tuple[int, int]:
    """(s₀, k) with s₀·2^k = image_size and 4 ≤ s₀ ≤ 7; ValueError if none exists."""
    size, steps = image_size, 0
    while size > 7 and size % 2 == 0:
        size, steps = size // 2, steps + 1
    if not 4 <= size <= 7 or steps == 0:
        raise ValueError(
            f"image_size={image_size} is not supported by the DCGAN generator: it must be s0 * 2**k "
            f"with 4 <= s0 <= 7 and k >= 1 (e.g. 28, 32, 64, 128)"
        )
    return size, steps


class DCGANGenerator(nn.Module):
    """DCGAN generator: (B, latent_dim) codes → (B, channels, image_size, image_size) in [-1, 1].

    `width` is the channel count of the last hidden layer; the coarsest map has width·2^(k-1)
    channels. width=64 at 28 px (128@7² → 64@14² → C@28²) has ≈0.23 M parameters.
    """

    def __init__(self, latent_dim: int, image_size: int = 28, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        coarse, steps = _coarse_size(image_size)
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        top = width * 2 ** (steps - 1)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * coarse * coarse, bias=False),
            nn.Unflatten(1, (top, coarse, coarse)),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = top
        for _ in range(steps - 1):
            blocks += [
                nn.ConvTranspose2d(c, c // 2, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        self.upsample = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.ConvTranspose2d(c, channels, kernel_size=4, stride=2, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) → images (B, channels, image_size, image_size) in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.to_image(self.upsample(self.project(z)))


GENERATORS = {"dcgan": DCGANGenerator}


def build_generator(name: str, latent_dim: int, image_shape: tuple[int, int, int], width: int) -> nn.Module:
    """Generator by name for images of shape (C, H, W) with H == W."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {sorted(GENERATORS)}")
    channels, height, width_px = image_shape
    if height != width_px:
        raise ValueError(f"square images expected, got image_shape={tuple(image_shape)}")
    return GENERATORS[name](latent_dim=latent_dim, image_size=height, channels=channels, width=width)
