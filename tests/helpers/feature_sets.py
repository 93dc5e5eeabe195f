"""Image sets for the metric tests: MNIST-like digit blobs, noisy copies and pure noise, all
(n, 1, 28, 28) in [-1, 1], deterministic given their seeds; and the fixtures ``real`` (200 blobs)
and ``extractor`` (a small RandomConvFeatures), to import into a test module."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.idx_files import mnist_like
from neurosql_pl.features import RandomConvFeatures


def blobs(n: int, seed: int) -> torch.Tensor:
    """n MNIST-like images (1, 28, 28) in [-1, 1] (the test helper's digit blobs)."""
    images, _ = mnist_like(n, seed)
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


def noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def pure_noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(like.shape, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def extractor() -> RandomConvFeatures:
    return RandomConvFeatures(num_features=32, seed=0)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return blobs(200, seed=0)
