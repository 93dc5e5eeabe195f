"""The oversampled lattice: K = k·N lattice points for N images, k per image (`NeuroSQL(oversample=k)`).

With k = 1 (the default) every image holds one lattice point, as the method states. With k > 1
the lattice has K = k·N points and π, Ẑ and the assignment step run over K *codes*:

    code v ∈ [0, K) belongs to image v mod N, as its copy r = v // N;  v = i + r·N.

The assignment sees image i as k identical rows of its cost matrix, C[v, l] = ℓ(X_{v mod N}, G(Q_l)),
so each LSAP is a capacity-k assignment (a transport with k units per image and one per lattice
point) and π stays a permutation of the K lattice points: every lattice point is held exactly
once, every image exactly k times. Everything that works on π (blocks, sweeps, multiscale, the
DDP split, the momentum update) works on codes unchanged; only what reads an image maps a code
to it (`image_of`), and what is computed per image (the real images' features, PCA scores) is
stored once per image and spread over its codes (`per_code`). Copy 0 of image i is code i, so
with k = 1 codes are dataset indices and nothing changes, and `NeuroSQL.reconstruct(i)` is
G(Ẑ_i) of copy 0.

Training (`draw_codes`): each visit of image i trains one of its k codes, the copy drawn
uniformly from torch's global random state (checkpointed, so a resumed run draws the same), so
that over the epochs the generator trains on all K codes; k = 1 draws nothing.

"auto" chooses k from N: the least k with k·N ≥ AUTO_CODES (10,000), at most MAX_AUTO_OVERSAMPLE
(100; so k·N ≥ 10,000 for N ≥ 100), and 1 for N ≥ 10,000.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AUTO_CODES", "MAX_AUTO_OVERSAMPLE", "Oversample", "check_oversample", "copies_per_image", "draw_codes", "image_of",
    "keep_held_points", "per_code", "resolve_oversample",
]

#: the setting: a number of codes per image k ≥ 1, or "auto" (chosen from N, `resolve_oversample`)
Oversample = int | Literal["auto"]
AUTO_CODES = 10_000  # "auto": the least k with k·N ≥ this many codes ...
MAX_AUTO_OVERSAMPLE = 100  # ... but at most this many codes per image


def check_oversample(oversample: object) -> None:
    """Raise ValueError unless `oversample` is an int ≥ 1 or "auto"."""
    if oversample == "auto":
        return
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"oversample must be an integer >= 1 or 'auto', got {oversample!r}")


def resolve_oversample(oversample: Oversample, num_images: int) -> int:
    """k, the codes per image, for N = num_images ≥ 1: the integer itself, or for "auto"
    min(MAX_AUTO_OVERSAMPLE, ⌈AUTO_CODES / N⌉) (1 for N ≥ AUTO_CODES)."""
    check_oversample(oversample)
    if oversample == "auto":
        return min(MAX_AUTO_OVERSAMPLE, math.ceil(AUTO_CODES / num_images))
    return int(oversample)


def copies_per_image(num_codes: int, num_images: int) -> int:
    """k = K / N for K codes of N ≥ 1 images; ValueError unless N divides K."""
    if num_images < 1 or num_codes % num_images:
        raise ValueError(f"{num_codes} codes are not a whole number of codes per image for {num_images} images")
    return num_codes // num_images


def image_of(codes: Tensor, num_images: int) -> Tensor:
    """The image of each code: codes (…,) in [0, K) → dataset indices v mod N (…,) in [0, N)."""
    return codes % num_images


def per_code(rows: Tensor, copies: int) -> Tensor:
    """Per-image rows (N, …) spread over the codes: (k·N, …), row v = rows[v mod N]."""
    return rows.repeat(copies, *([1] * (rows.ndim - 1)))


def keep_held_points(old: Tensor, new: Tensor, num_images: int) -> Tensor:
    """π `new` (K,) relabelled among each image's codes so that codes keep their points.

    The LSAP cannot tell an image's k codes apart (their cost rows are equal), so which copy
    gets which of the image's new points is arbitrary. This keeps the points `new` gives each
    image, and gives every code whose image still holds its `old` point that point again; the
    image's other new points go to its other codes, both in increasing index order. So
    Ẑ_v ← ρ·Q_π(v) + (1−ρ)·Ẑ_v moves a code only when its image lost its point, and
    "changed" counts codes that really changed. old, new: permutations (K,) of 0..K−1; k = 1
    returns `new` itself.
    """
    num_codes = new.shape[0]
    if copies_per_image(num_codes, num_images) == 1:
        return new
    codes = torch.arange(num_codes, device=new.device)
    image = image_of(codes, num_images)
    holder = torch.empty_like(new)
    holder[new] = image  # the image each lattice point goes to
    keeps = holder[old] == image
    relabelled = torch.full_like(new, -1)
    relabelled[keeps] = old[keeps]
    kept = torch.zeros(num_codes, dtype=torch.bool, device=new.device)
    kept[old[keeps]] = True
    free_points = (~kept).nonzero().flatten()
    free_codes = (~keeps).nonzero().flatten()
    # per image as many free points as free codes: match them image by image, in index order
    points_by_image = free_points[torch.argsort(holder[free_points] * num_codes + free_points)]
    codes_by_image = free_codes[torch.argsort(image[free_codes] * num_codes + free_codes)]
    relabelled[codes_by_image] = points_by_image
    return relabelled


def draw_codes(images: Tensor, copies: int, num_images: int) -> Tensor:
    """The codes a training batch trains: for dataset indices (B,) in [0, N), one code per image,
    i + r·N with its copy r drawn uniformly from 0..k−1 by torch's global (CPU) random state;
    with k = 1 the indices themselves, and nothing is drawn."""
    if copies == 1:
        return images
    return images + torch.randint(copies, images.shape).to(images.device) * num_images
