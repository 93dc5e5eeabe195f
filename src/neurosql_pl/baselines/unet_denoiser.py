"""A small time-conditioned U-Net ε_θ(x_t, t) for the DDPM baseline.

Layout (Ho et al. 2020, scaled down): a 3×3 stem to `width` channels; one resolution level per
entry of `channel_mults`, each with `num_res_blocks` residual blocks (GroupNorm, SiLU, 3×3
convolutions, the time embedding added in between) at width·mult channels, levels joined by
stride-2 3×3 convolutions; two residual blocks at the bottom; the mirror path upsamples
(nearest ×2, then a 3×3 convolution) and concatenates the skip of the same resolution before
each residual block; GroupNorm, SiLU and a 3×3 convolution back to the image channels.
There is no attention: at ≈0.2 M parameters it would take a large share of the budget.

Image sizes: any H = W divisible by 2^(len(channel_mults) − 1). With the default three levels
28 px works as it is (28 → 14 → 7, then back up by nearest-neighbour ×2), so MNIST is not
padded; 32 and 64 px work too.

The time step t ∈ {0, …, T−1} enters as a sinusoidal embedding of `width` dimensions
followed by a two-layer MLP (width → 4·width → 4·width).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 that divides `channels`."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer (or real) time steps t (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, + time embedding, GroupNorm → SiLU → conv3×3, + (1×1) skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(t_emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNetDenoiser(nn.Module):
    """ε_θ(x_t, t): (B, C, S, S) noisy images and (B,) time steps → (B, C, S, S) predicted noise."""

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        width: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not channel_mults or any(m < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        factor = 2 ** (len(channel_mults) - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2**{len(channel_mults) - 1}={factor}, as "
                f"{len(channel_mults)} U-Net levels (channel_mults={tuple(channel_mults)}) need; use fewer levels"
            )
        self.image_size, self.channels, self.width = image_size, channels, width
        t_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.stem = nn.Conv2d(channels, width, 3, padding=1)

        self.down = nn.ModuleList()
        skips, c = [width], width
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, width * mult, t_dim))
                c = width * mult
                skips.append(c)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, t_dim), ResBlock(c, c, t_dim)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width * mult, t_dim))
                c = width * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        t_emb = self.time_mlp(timestep_embedding(t, self.width))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, t_emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, t_emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), t_emb)
            else:
                h = layer(h)
        return self.out(h)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of `module`, all or only those with requires_grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def width_for_budget(
    budget: int,
    image_size: int,
    channels: int,
    channel_mults: tuple[int, ...] = (1, 2, 2),
    num_res_blocks: int = 1,
    multiple: int = 1,
) -> int:
    """The largest width (a multiple of `multiple`) whose `UNetDenoiser` has at most `budget` parameters.

    Widths that are not multiples of 8 are allowed: GroupNorm then uses the largest of 8, 4,
    2, 1 groups that divides the channel count (e.g. width 15 at 28 px, 231,361 parameters
    against the 232,833 of NeuroSQL's width-64 DCGAN generator)."""
    def size(w: int) -> int:
        return count_parameters(UNetDenoiser(image_size, channels, w, tuple(channel_mults), num_res_blocks))

    if size(multiple) > budget:
        raise ValueError(f"even width={multiple} exceeds the parameter budget {budget:,} ({size(multiple):,} parameters)")
    lo, hi = 1, 2
    while size(hi * multiple) <= budget:  # parameter count grows with the width
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid * multiple) <= budget else (lo, mid)
    return lo * multiple
