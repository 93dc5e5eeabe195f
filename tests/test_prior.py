"""The prior new images come from: plain N(0, I) draws unchanged, truncation exact and checked."""

from __future__ import annotations

import math

import pytest
import torch

from neurosql_pl import NeuroSQL
from neurosql_pl.baselines import DDPM, GAN, VAE
from neurosql_pl.evaluate import draw_samples
from neurosql_pl.prior import sample_prior
from neurosql_pl.run_folder import EvaluationError


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_without_truncation_the_draws_are_torch_randn() -> None:
    assert torch.equal(sample_prior(50, 7, seeded()), torch.randn(50, 7, generator=seeded()))


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_truncated_draws_stay_inside_and_follow_the_truncated_normal(t: float) -> None:
    z = sample_prior(20_000, 8, seeded(3), truncation=t)
    assert z.shape == (20_000, 8) and z.abs().max() <= t
    assert torch.equal(z, sample_prior(20_000, 8, seeded(3), truncation=t))  # seeded: reproducible
    # variance of N(0, 1) restricted to [-t, t]: 1 - 2 t φ(t) / (2 Φ(t) - 1)
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(t / math.sqrt(2))
    expected = 1 - 2 * t * phi / mass
    assert abs(z.var().item() - expected) < 0.02 * expected
    assert abs(z.mean().item()) < 0.01
    # components inside the threshold are the plain draws, kept as they were
    plain = torch.randn(20_000, 8, generator=seeded(3))
    inside = plain.abs() <= t
    assert torch.equal(z[inside], plain[inside])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_an_impossible_truncation_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="truncation must be"):
        sample_prior(4, 2, truncation=bad)


@pytest.mark.parametrize("make", [
    lambda: NeuroSQL(image_shape=(1, 28, 28), num_samples=4, perceptual=None, block_size=4, latent_dim=4),
    lambda: VAE(image_shape=(1, 28, 28), latent_dim=4),
    lambda: GAN(image_shape=(1, 28, 28), latent_dim=4),
])
def test_every_one_pass_model_samples_from_the_truncated_prior(make) -> None:
    model = make()
    net = {"NeuroSQL": lambda m: m.generator, "VAE": lambda m: m.decoder, "GAN": lambda m: m.generator}[type(model).__name__](model)
    z = sample_prior(6, 4, seeded(1), truncation=0.7)
    net.eval()
    with torch.no_grad():
        expected = net(z)
    assert torch.allclose(model.sample(6, generator=seeded(1), truncation=0.7), expected)
    assert torch.allclose(draw_samples(model, 6, seed=1, batch_size=6, truncation=0.7), expected.clamp(-1, 1))


def test_truncation_of_a_diffusion_model_says_what_it_applies_to() -> None:
    ddpm = DDPM(image_shape=(1, 28, 28))
    with pytest.raises(EvaluationError, match="NeuroSQL, the VAE and the GAN only"):
        draw_samples(ddpm, 2, seed=0, batch_size=2, truncation=1.0)
