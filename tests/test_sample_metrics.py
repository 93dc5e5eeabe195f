"""Pixel-space nearest neighbours, the memorisation check, paired SSIM/LPIPS and reconstruction
scores (neurosql_pl.sample_metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.feature_sets import blobs, noisy, real  # noqa: F401 - real: a fixture
from neurosql_pl import sample_metrics as S


# ----------------------------------------------------------------------------- pixel space


def test_nearest_neighbours_match_brute_force_and_accept_blocks(real):
    queries = noisy(blobs(30, seed=9), 0.2, seed=4)
    brute = (queries.flatten(1)[:, None, :] - real.flatten(1)[None, :, :]).square().mean(-1)
    d, idx = S.nearest_neighbours(queries, real, chunk_size=7)
    assert torch.equal(idx, brute.argmin(1))
    assert torch.allclose(d, brute.min(1).values, rtol=1e-5, atol=1e-7)
    d2, idx2 = S.nearest_neighbours(queries, iter(real.split(64)), chunk_size=11)
    assert torch.equal(idx2, idx) and torch.allclose(d2, d)
    with pytest.raises(ValueError, match="no reference"):
        S.nearest_neighbours(queries, iter([]))


def test_memorisation_flag():
    train, heldout = blobs(300, seed=0), blobs(100, seed=1)
    held_d, _ = S.nearest_neighbours(heldout, train)
    copies = train[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:100]]
    copied = S.memorisation_check(S.nearest_neighbours(copies, train)[0], held_d)
    assert copied["flag"] and copied["ratio"] == 0.0 and copied["frac_close"] == 1.0
    fresh = S.memorisation_check(S.nearest_neighbours(blobs(100, seed=2), train)[0], held_d)
    assert not fresh["flag"] and 0.7 < fresh["ratio"] < 1.4 and fresh["frac_close"] < 0.2
    half = torch.cat([copies[:50], blobs(50, seed=3)])
    partial = S.memorisation_check(S.nearest_neighbours(half, train)[0], held_d)
    assert partial["frac_close"] >= 0.5  # the diagnostic sees half the samples copied


def test_ssim_lpips_and_reconstruction_metrics(real):
    x = real[:16]
    assert torch.allclose(S.paired_ssim(x, x), torch.ones(16), atol=1e-5)
    assert (S.paired_ssim(x, noisy(x, 0.3, 0)) < 0.9).all()
    lpips = S.paired_lpips(x, x)  # stlpips-alex, offline
    assert lpips.shape == (16,) and lpips.abs().max() < 1e-6
    seen = []

    def identity(images, indices):
        seen.append(indices.clone())
        return images

    perfect = S.reconstruction_metrics(identity, x, torch.arange(100, 116), perceptual=None, batch_size=5)
    assert torch.equal(torch.cat(seen), torch.arange(100, 116))
    assert perfect == {"mse": 0.0, "psnr": pytest.approx(10 * np.log10(4 / 1e-10)), "ssim": pytest.approx(1.0, abs=1e-5), "lpips": None}
    shifted = S.reconstruction_metrics(lambda images, _i: (images + 0.1).clamp(-1, 1), x, perceptual=None)
    clipped_mse = float(((x + 0.1).clamp(-1, 1) - x).square().mean())
    assert shifted["mse"] == pytest.approx(clipped_mse, rel=1e-5)
    assert shifted["psnr"] < 30 and shifted["ssim"] < 1
    with pytest.raises(ValueError, match="reconstruct returned"):
        S.reconstruction_metrics(lambda images, _i: images[:, :, :10], x, perceptual=None)
