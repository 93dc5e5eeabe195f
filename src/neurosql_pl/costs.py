"""Cost matrices between two sets of vectors, in GEMM form.

The assignment step needs C[i, k] = ℓ(X_i, G(Q_k)) for a whole m×m block. When ℓ is a
squared Euclidean distance between fixed feature vectors (MSE on pixels, LPIPS on
normalised backbone features, or a weighted concatenation of both), the identity

    ‖a_i − b_k‖² = ‖a_i‖² + ‖b_k‖² − 2·⟨a_i, b_k⟩

turns the matrix into one matrix product: n·m·D multiply-adds instead of n·m network
passes. ``pairwise_sq_dists`` is the single place this formula lives.

Numerics: the identity cancels when distances are small next to the norms. We therefore
(1) subtract the mean of ``b`` from both sides first (distances are translation invariant,
the norms shrink), (2) always compute in float32 or float64 with autocast disabled (a
bf16/fp16 GEMM would destroy the cancellation), and (3) clamp the result at 0.

``pairwise_l1`` gives Σ_j |a_ij − b_kj| (``torch.cdist`` with p=1) for an L1 pixel term,
which is not a squared distance and so has no GEMM form (cost n·m·D without BLAS).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pairwise_sq_dists", "pairwise_l1"]


def _check_pair(a: Tensor, b: Tensor) -> torch.dtype:
    if a.ndim not in (2, 3) or b.ndim != a.ndim or (a.ndim == 3 and a.shape[0] != b.shape[0]):
        raise ValueError(
            f"expected (n, D) and (m, D), or (k, n, D) and (k, m, D) tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"feature dimensions differ: a has D={a.shape[-1]}, b has D={b.shape[-1]}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError(f"expected floating-point tensors, got {a.dtype} and {b.dtype}")
    return torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32


def _row_chunks(n: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    step = n if not chunk_size else chunk_size
    return [slice(s, min(s + step, n)) for s in range(0, n, max(step, 1))]


def pairwise_sq_dists(a: Tensor, b: Tensor, chunk_size: int | None = None, center: bool = True) -> Tensor:
    """Squared Euclidean distances C[i, k] = ‖a_i − b_k‖² via one GEMM per row chunk.

    Args:
        a: (n, D) float tensor (any device; row chunks are moved to ``b``'s device), or a
            stack (k, n, D) of k independent problems (one batched GEMM for all of them).
        b: (m, D) float tensor, or (k, m, D) with ``a`` stacked.
        chunk_size: rows of ``a`` per GEMM (bounds memory to chunk·(m + D)); None = all.
        center: subtract mean(b) from both first (exact; improves float32 accuracy).

    Returns:
        (n, m) — or (k, n, m) — tensor ≥ 0 on ``b``'s device, float64 if either input is
        float64, else float32.
    """
    dtype = _check_pair(a, b)
    device = b.device
    n, m = a.shape[-2], b.shape[-2]
    out = torch.empty(*a.shape[:-2], n, m, dtype=dtype, device=device)
    if n == 0 or m == 0:
        return out
    with torch.autocast(device_type=device.type, enabled=False):
        bb = b.to(dtype)
        mu = bb.mean(dim=-2, keepdim=True) if center else None
        if mu is not None:
            bb = bb - mu
        b_sq = bb.square().sum(dim=-1).unsqueeze(-2)  # (…, 1, m)
        bt = bb.transpose(-1, -2)
        for rows in _row_chunks(n, chunk_size):
            aa = a[..., rows, :].to(device=device, dtype=dtype)
            if mu is not None:
                aa = aa - mu
            a_sq = aa.square().sum(dim=-1, keepdim=True)  # (…, c, 1)
            # out = a_sq + b_sq − 2·aa·bbᵀ, written as one (batched) addmm
            add = torch.baddbmm if aa.ndim == 3 else torch.addmm
            block = add(a_sq + b_sq, aa, bt, beta=1.0, alpha=-2.0)
            out[..., rows, :] = block.clamp_min_(0.0)
    return out


def pairwise_l1(a: Tensor, b: Tensor, chunk_size: int | None = None) -> Tensor:
    """L1 distances C[i, k] = Σ_j |a_ij − b_kj| (``torch.cdist``, p=1), chunked over rows of ``a``.

    Args:
        a: (n, D) float tensor (row chunks are moved to ``b``'s device).
        b: (m, D) float tensor.
        chunk_size: rows of ``a`` per call; None = all.

    Returns:
        (n, m) tensor ≥ 0 on ``b``'s device, float64 if either input is float64, else float32.
    """
    dtype = _check_pair(a, b)
    if a.ndim != 2:
        raise ValueError(f"pairwise_l1 takes 2-D tensors (n, D) and (m, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    device = b.device
    n, m = a.shape[0], b.shape[0]
    out = torch.empty(n, m, dtype=dtype, device=device)
    if n == 0 or m == 0:
        return out
    with torch.autocast(device_type=device.type, enabled=False):
        bb = b.to(dtype)
        for rows in _row_chunks(n, chunk_size):
            out[rows] = torch.cdist(a[rows].to(device=device, dtype=dtype), bb, p=1.0)
    return out
