"""The prior new images come from: z ~ N(0, I_d), optionally truncated.

`sample_prior` is what NeuroSQL, the VAE and the GAN draw their codes with. Truncation (lever 6 of
the quality work) redraws every component with |z_j| > t until it lies inside, so z follows
N(0, I_d) restricted to the cube [-t, t]^d: fewer codes far out in the tails, where a generator has
seen few training codes, at some cost in diversity. t = None is the plain prior.
"""

from __future__ import annotations

import torch

__all__ = ["check_truncation", "sample_prior"]


def check_truncation(truncation: float | None) -> None:
    """A ValueError unless truncation is None (off) or a threshold t > 0 in standard deviations."""
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be None (no truncation) or > 0 standard deviations, e.g. 2.0; got {truncation}")


def sample_prior(
    n: int, d: int, generator: torch.Generator | None = None, truncation: float | None = None
) -> torch.Tensor:
    """n codes (n, d) on the CPU from N(0, I_d), or with ``truncation`` = t from N(0, I_d) restricted
    to |z_j| ≤ t (every component outside is redrawn from the same generator). With truncation None
    the draws are exactly ``torch.randn(n, d, generator=generator)``."""
    check_truncation(truncation)
    z = torch.randn(n, d, generator=generator)
    if truncation is None:
        return z
    outside = z.abs() > truncation
    while outside.any():  # P(|z| > t) < 1: ends; t = 0.5 needs ~2.6 rounds per component on average
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = z.abs() > truncation
    return z
