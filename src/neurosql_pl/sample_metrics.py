"""Scores of generated or reconstructed images against real images, image by image.

Images everywhere are float tensors (B, C, H, W) with values in [-1, 1].

Pixel space (squared distances by GEMM, ``costs.pairwise_sq_dists``, chunked)
    ``nearest_neighbours``    for each query image, the mean squared pixel distance (MSE) to
                              its nearest reference image, and that image's index.
    ``memorisation_check``    compares the nearest-training-image distances of synthetic images
                              with those of held-out real images (see its docstring).
Perceptual
    ``paired_ssim``, ``paired_lpips``  per-pair SSIM (torchmetrics, data range [-1, 1]) and LPIPS
                              (``perceptual.build_perceptual``, default the offline ST-LPIPS alex).
Reconstructions
    ``reconstruction_metrics``  MSE / PSNR / SSIM / LPIPS of a model's reconstructions, for any
                              ``reconstruct(images, indices)`` callable (``psnr`` from per-image MSE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .costs import pairwise_sq_dists
from .images import check_images

__all__ = [
    "memorisation_check",
    "nearest_neighbours",
    "paired_lpips",
    "paired_ssim",
    "psnr",
    "reconstruction_metrics",
]


# ============================================================================ pixel space


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).float()


@torch.no_grad()
def nearest_neighbours(
    queries: Tensor,
    references: Tensor | Iterable[Tensor],
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """For each query image, the nearest reference image in mean squared pixel distance.

    Args:
        queries: (n, C, H, W) images (any value range; [-1, 1] here).
        references: (m, C, H, W) images, or an iterable of such blocks (consecutive rows of one
            reference set, so the set never has to be in memory at once).
        chunk_size: query rows per GEMM (memory ≈ chunk_size × block rows floats).
        device: where the GEMMs run (default: the queries' device).

    Returns:
        (mse (n,) float32 = min_k mean_j (q_j − r_kj)², index (n,) int64 into the references).
        Candidates are found by GEMM (``costs.pairwise_sq_dists``); the winning distance is then
        recomputed directly, so an exact copy gives exactly 0.
    """
    device = torch.device(device) if device is not None else queries.device
    q = _flat(queries).to(device)
    n, p = q.shape
    best = torch.full((n,), float("inf"), device=device)
    best_idx = torch.zeros(n, dtype=torch.long, device=device)
    blocks = [references] if isinstance(references, Tensor) else references
    offset = 0
    for block in blocks:
        r = _flat(block).to(device)
        if r.shape[1] != p:
            raise ValueError(f"query images have {p} values each, reference images {r.shape[1]}")
        if r.shape[0] == 0:
            continue
        mu = r.mean(dim=0, keepdim=True)
        rc = r - mu
        for s in range(0, n, chunk_size):
            d = pairwise_sq_dists(q[s : s + chunk_size] - mu, rc, center=False)
            val, idx = d.min(dim=1)
            exact = (q[s : s + chunk_size] - r[idx]).square().mean(dim=1)
            better = exact < best[s : s + chunk_size]
            rows = torch.arange(s, s + val.shape[0], device=device)[better]
            best[rows] = exact[better]
            best_idx[rows] = idx[better] + offset
        offset += r.shape[0]
    if offset == 0:
        raise ValueError("nearest_neighbours got no reference images")
    return best.cpu(), best_idx.cpu()


def memorisation_check(
    synthetic_to_train: Tensor, heldout_to_train: Tensor, threshold: float = 0.5, quantile: float = 0.05
) -> dict[str, Any]:
    """Are synthetic images suspiciously close to training images?

    Inputs are nearest-training-image distances (e.g. ``nearest_neighbours(x, train)[0]``) of
    synthetic images and of held-out real images (the test split, never trained on) — measured
    against the same training set, so they are directly comparable.

    ratio = median(synthetic→train) / median(held-out→train). A model that generalises draws new
    images about as far from the training set as new real images are: ratio ≈ 1. Copies of
    training images give ratio ≈ 0. ``flag`` = ratio < ``threshold`` (default 0.5). Blurry
    samples sit somewhat closer to their nearest training image than real images do (mean
    images are near everything: MNIST, MSE-trained NeuroSQL ≈ 0.7), so the threshold is set
    well below that. ``frac_close`` (reported, not used for the flag) is the fraction of
    synthetic images closer than the ``quantile`` (5 %) quantile of the held-out distances:
    ≈ 0.05 for fresh samples, → 1 for copies, in between for partial copying.
    """
    syn, held = synthetic_to_train.double().flatten(), heldout_to_train.double().flatten()
    if syn.numel() == 0 or held.numel() == 0:
        raise ValueError("memorisation_check needs non-empty distance sets")
    med_syn, med_held = float(syn.median()), float(held.median())
    ratio = med_syn / med_held if med_held > 0 else (0.0 if med_syn == 0 else float("inf"))
    q = float(torch.quantile(held, quantile))
    return {
        "ratio": ratio,
        "flag": bool(ratio < threshold),
        "threshold": threshold,
        "median_synthetic": med_syn,
        "median_heldout": med_held,
        "frac_close": float((syn < q).double().mean()),
    }


# ============================================================================ perceptual


@torch.no_grad()
def paired_ssim(x: Tensor, y: Tensor, batch_size: int = 256) -> Tensor:
    """SSIM of each pair (x_i, y_i), images in [-1, 1] (data range 2; values clamped to [-1, 1]),
    torchmetrics' Gaussian-window SSIM (11 px, σ 1.5): (n,) float32."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    out = [
        ssim(a.float(), b.float(), data_range=(-1.0, 1.0), reduction="none").reshape(-1)
        for a, b in zip(x.split(batch_size), y.split(batch_size))
    ]
    return torch.cat(out).float().cpu()


@torch.no_grad()
def paired_lpips(x: Tensor, y: Tensor, perceptual: nn.Module | str = "stlpips-alex", batch_size: int = 64) -> Tensor:
    """LPIPS of each pair (x_i, y_i), images in [-1, 1]: (n,) float32. ``perceptual`` is a
    ``perceptual.PerceptualFeatures`` or a backend name for ``perceptual.build_perceptual``
    (default the offline ST-LPIPS alex)."""
    from .perceptual import build_perceptual

    net = build_perceptual(perceptual) if isinstance(perceptual, str) else perceptual
    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    device = next(iter(net.buffers()), next(iter(net.parameters()), torch.empty(0))).device
    out = [
        net.distance(a.to(device).clamp(-1, 1), b.to(device).clamp(-1, 1)).float().cpu()
        for a, b in zip(x.split(batch_size), y.split(batch_size))
    ]
    return torch.cat(out)


# ============================================================================ reconstructions


def psnr(mse: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR in dB from per-image MSE (images in [-1, 1]: data range 2), MSE floored at 1e-10."""
    return 10.0 * torch.log10(data_range**2 / mse.double().clamp_min(1e-10))


@torch.no_grad()
def reconstruction_metrics(
    reconstruct: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    indices: Tensor | None = None,
    perceptual: nn.Module | str | None = "stlpips-alex",
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean MSE, PSNR (dB, per image then averaged), SSIM and LPIPS of reconstructions.

    ``reconstruct(images_batch, indices_batch)`` returns the reconstructions (B, C, H, W) in
    [-1, 1] of a batch; adapt the model's own method, e.g. ``lambda x, i: model.reconstruct(i)``
    for NeuroSQL (which reconstructs training index i from its code Ẑ_i) or
    ``lambda x, i: vae.reconstruct(x)`` for an autoencoder. ``indices`` default to 0..n−1.
    ``perceptual=None`` skips LPIPS (reported as None).
    """
    check_images(images, "reconstruction_metrics")
    indices = torch.arange(images.shape[0]) if indices is None else torch.as_tensor(indices).long()
    if indices.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {indices.shape[0]} indices")
    recon = []
    for x, i in zip(images.split(batch_size), indices.split(batch_size)):
        r = reconstruct(x, i)
        if not isinstance(r, Tensor) or r.shape != x.shape:
            raise ValueError(f"reconstruct returned {tuple(r.shape) if isinstance(r, Tensor) else r!r}, expected {tuple(x.shape)}")
        recon.append(r.detach().float().cpu())
    rec = torch.cat(recon)
    mse = (rec - images.float().cpu()).square().flatten(1).mean(dim=1)
    out = {
        "mse": float(mse.mean()),
        "psnr": float(psnr(mse).mean()),
        "ssim": float(paired_ssim(rec, images.float().cpu()).mean()),
        "lpips": None if perceptual is None else float(paired_lpips(rec, images.float().cpu(), perceptual).mean()),
    }
    return out
