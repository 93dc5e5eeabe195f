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
bf16/fp16 GEMM would destroy the cancellation) and at full float32 matmul precision (no TF32 or
bf16 passes, whatever ``torch.set_float32_matmul_precision`` says outside: ``exact_matmul``), and
(3) clamp the result at 0.

``pairwise_l1`` gives Σ_j |a_ij − b_kj| for the L1 part of a loss (pixel L1, Laplacian-pyramid
L1), which is not a squared distance and so has no GEMM form: n·m·D subtractions, absolute
values and additions without BLAS. On the CPU it works in tiles of pairs (≤ 256 columns, and
as many rows as keep the (rows, cols, D) difference near L1_TILE_ELEMENTS values): one
broadcast subtraction into a reused buffer, |·| in place, a sum over D: 1.7–2.5× faster than
``torch.cdist(p=1)`` on 2 CPU cores (`make bench`, section 4a), and still about 10× the time
of a GEMM of the same width. Vectors wider than L1_DIM_CHUNK (colour 64 px: D = 12,288) are cut
into slices of columns whose partial sums are added, so that a tile still holds many pairs:
1.6–1.7× faster than whole rows at D = 12,288, the same at D ≤ 3,072. Large float32 problems
on the CPU skip the tiles' stored differences altogether: a loop nest compiled by torch.compile
(`l1_kernel.fused_l1`; the tiles stay where it cannot be built, section 6 compares them).
Elsewhere (CUDA) it calls ``torch.cdist(p=1)``. All are exact up to the float summation order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .l1_kernel import fused_l1, near_equal_runs

__all__ = ["exact_matmul", "pairwise_sq_dists", "pairwise_l1"]


@contextmanager
def exact_matmul(device_type: str) -> Iterator[None]:
    """Autocast off and float32 matmuls at "highest" precision (no TF32 / bf16 passes) inside;
    the caller's settings come back afterwards."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


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
    out = _result(a, b)
    dtype, device, n = out.dtype, out.device, a.shape[-2]
    if out.numel() == 0:
        return out
    with exact_matmul(device.type):
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


def _result(a: Tensor, b: Tensor) -> Tensor:
    """The uninitialised (n, m) — or (k, n, m) — result of a pairwise cost of ``a`` and ``b`` (checked
    by `_check_pair`), on ``b``'s device, in their common dtype."""
    dtype = _check_pair(a, b)
    return torch.empty(*a.shape[:-2], a.shape[-2], b.shape[-2], dtype=dtype, device=b.device)


def pairwise_l1(a: Tensor, b: Tensor, chunk_size: int | None = None) -> Tensor:
    """L1 distances C[i, k] = Σ_j |a_ij − b_kj|, chunked over rows of ``a``: for ``a`` (n, D) and
    ``b`` (m, D), or stacks (k, n, D) and (k, m, D), the (n, m) or (k, n, m) result ≥ 0 with the
    devices and dtypes of `pairwise_sq_dists`; ``chunk_size`` rows of ``a`` per step (None = all;
    the CPU path tiles them further)."""
    out = _result(a, b)
    dtype, device, n = out.dtype, out.device, a.shape[-2]
    if out.numel() == 0:
        return out
    with exact_matmul(device.type):
        bb = b.to(dtype)
        for rows in _row_chunks(n, chunk_size):
            aa = a[..., rows, :].to(device=device, dtype=dtype)
            if device.type == "cpu":
                _l1_tiles(aa, bb, out[..., rows, :])
            else:
                out[..., rows, :] = torch.cdist(aa, bb, p=1.0)
    return out


L1_TILE_ELEMENTS = 2**21  # values in one broadcast difference tile (8 MiB in float32)
L1_DIM_CHUNK = 2048  # widest slice of the vectors one tile covers (`_dense_l1_tiles`)


def _l1_tiles(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out[..., i, k] = Σ_j |a[..., i, j] − b[..., k, j]|, in place: by the compiled kernel
    (`l1_kernel.fused_l1`) where it runs, else the separable columns of each (a, b) pair in closed
    form (`_separable_columns`) and the others by `_dense_l1_tiles`."""
    if fused_l1(a, b, out):  # all blocks at once, every column: the kernel is cheaper than the split
        return
    if a.ndim == 3:
        for j in range(a.shape[0]):
            _l1_tiles(a[j], b[j], out[j])
        return
    separable = _separable_columns(a, b)
    if separable is None:
        _dense_l1_tiles(a, b, out)
        return
    below, columns = separable
    rest = (~columns).nonzero().squeeze(1)
    if len(rest):
        _dense_l1_tiles(a[:, rest], b[:, rest], out)
    else:
        out.zero_()
    cols = columns.nonzero().squeeze(1)
    below, a_s, b_s = below[cols], a[:, cols], b[:, cols]
    lo, hi = b_s.min(dim=0).values, b_s.max(dim=0).values
    # |a − b| = (b − lo) + (lo − a) where a ≤ lo ≤ b, and (a − hi) + (hi − b) where b ≤ hi ≤ a: all terms ≥ 0
    out += torch.where(below, b_s - lo, hi - b_s).sum(dim=1)[None, :]
    out += torch.where(below, lo - a_s, a_s - hi).sum(dim=1)[:, None]


def _separable_columns(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
    """The columns j where every a[i, j] ≤ min_k b[k, j] ("below") or every a[i, j] ≥ max_k b[k, j]:
    there |a_ij − b_kj| is a term of i plus a term of k, so their part of the L1 distances is one
    row vector plus one column vector (n + m sums instead of n·m). On MNIST pixels ψ a block of 256
    alike images has 35–40 % of them: the background pixels that are −1 in all its images (the
    generator's tanh never goes below). Returns (below (D,), separable (D,)), or None when there
    are none (or too few pairs for it to pay)."""
    if a.shape[0] * b.shape[0] < 1024 or a.shape[1] < 2:
        return None
    lo, hi = b.min(dim=0).values, b.max(dim=0).values
    below = (a <= lo).all(dim=0)
    columns = below | (a >= hi).all(dim=0)
    return (below, columns) if bool(columns.any()) else None


def _dense_l1_tiles(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out[i, k] = Σ_j |a[i, j] − b[k, j]| (2-D a, b) by cache-sized broadcast tiles, in place.
    Wide vectors (D > L1_DIM_CHUNK) are cut into near-equal slices of the columns j, each summed on
    its own and added up: a tile of one slice still holds many pairs (a tile of a full colour 64 px
    row, D = 12,288, would hold one image against 170, every pass past the caches)."""
    (n, dim), m = a.shape, b.shape[0]
    if dim == 0:
        out.zero_()
        return
    slices = near_equal_runs(dim, L1_DIM_CHUNK)
    width = slices[0].stop
    cols = min(m, 256)
    rows = max(1, L1_TILE_ELEMENTS // (cols * width))
    buffer = torch.empty(rows * cols * width, dtype=a.dtype, device=a.device)
    part = torch.empty_like(out) if len(slices) > 1 else None  # the partial sums of slices after the first
    for s, columns in enumerate(slices):
        target = out if s == 0 else part
        aj, bj = a[:, columns], b[:, columns]
        w = aj.shape[1]
        for c in range(0, m, cols):
            bc = bj[None, c : c + cols]
            for r in range(0, n, rows):
                ar = aj[r : r + rows, None]
                diff = torch.sub(ar, bc, out=buffer[: ar.shape[0] * bc.shape[1] * w].view(ar.shape[0], bc.shape[1], w))
                torch.sum(diff.abs_(), dim=-1, out=target[r : r + rows, c : c + cols])
        if s:
            out += part
