"""The L1 cost tiles as one compiled loop nest on the CPU (`fused_l1`).

C[i, k] = Σ_j |a_ij − b_kj| has no GEMM form. In eager torch a tile is three passes over a
(rows, cols, D) tensor of differences: subtract into a buffer, |·| in place, sum over D
(`costs._dense_l1_tiles`). Compiled by `torch.compile` (TorchInductor's C++ backend), the same
expression is one loop nest: each pair's differences are taken, made absolute and summed in
vector registers, and none is stored. The vectors are cut into slices of ≤ FUSED_DIM_CHUNK
columns and the second set into runs of ≤ FUSED_COLS rows, so that the rows a pair loop reads
stay in the caches (colour 64 px: D = 12,288); the partial sums are added. The sums are exact
up to the float summation order, like the tiles'.

Compiling takes seconds (about 7–25 s on 2 CPU cores) the first time on a machine; inductor's
on-disk cache (under the system's temporary folder) serves later processes. It is used for
float32 problems of at least FUSED_MIN_ELEMENTS differences on the CPU; smaller ones stay on the
tiles, where compiling would cost more than it saves. Where the kernel cannot be built (no C++
compiler, an unsupported platform) a warning says so once and the tiles are used for the rest of
the process; NEUROSQL_FUSED_L1=0 in the environment turns it off.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

__all__ = ["FUSED_MIN_ELEMENTS", "fused_l1", "fused_l1_available"]

FUSED_MIN_ELEMENTS = 2**24  # n·m·D of a problem below which the eager tiles run
FUSED_DIM_CHUNK = 2048  # widest slice of the vectors one kernel call covers
FUSED_COLS = 256  # most rows of the second set per kernel call
ENV_SWITCH = "NEUROSQL_FUSED_L1"

_kernel: Callable[[Tensor, Tensor], Tensor] | None = None
_compiled = False  # a call has run: the compiler's first-use messages are past
_failed = False


def _l1(a: Tensor, b: Tensor) -> Tensor:
    """Σ_j |a_tij − b_tkj|: a (t, n, w), b (t, c, w) → (t, n, c); compiled, nothing of (t, n, c, w) is stored."""
    return (a[:, :, None, :] - b[:, None, :, :]).abs().sum(dim=-1)


def fused_l1_available() -> bool:
    """Whether `fused_l1` may be used: not switched off, and not failed in this process."""
    return not _failed and os.environ.get(ENV_SWITCH, "1") != "0"


def near_equal_runs(total: int, most: int) -> list[slice]:
    """0..total-1 (total ≥ 1) in near-equal runs of at most `most`: the slices of columns of the
    kernel and of the eager tiles (here each run is ≥ 2 when total ≥ 2: sizes 0 and 1 would make
    the compiler specialise, and compile again)."""
    parts = -(-total // most)
    size = -(-total // parts)
    return [slice(s, min(s + size, total)) for s in range(0, total, size)]


def _plain(t: Tensor) -> Tensor:
    """t as a contiguous tensor that is not a view (no copy where t is contiguous): the compiled
    kernel's guards then see sizes only, not the strides or bases of views, so the blocks of a
    run all reuse one compiled kernel."""
    return t.detach() if t.is_contiguous() else t.contiguous()


def fused_l1(a: Tensor, b: Tensor, out: Tensor) -> bool:
    """out[..., i, k] = Σ_j |a[..., i, j] − b[..., k, j]| by the compiled kernel, in place, for
    a (n, D) and b (m, D), or stacks (t, n, D) and (t, m, D) of t blocks (one call for all).

    Returns False where the kernel is not used, and the caller then runs the eager tiles: `out`
    untouched when it declines (not float32 on the CPU, fewer than FUSED_MIN_ELEMENTS
    differences, n, m or D below 2, switched off), partial sums in `out` when it failed to build
    (warned once).
    """
    global _kernel, _compiled
    if a.ndim == 2:
        a, b, out = a[None], b[None], out[None]
    t, n, dim = a.shape
    m = b.shape[1]
    if (
        a.device.type != "cpu"
        or b.device.type != "cpu"
        or a.dtype != torch.float32
        or b.dtype != torch.float32
        or min(n, m, dim) < 2
        or t * n * m * dim < FUSED_MIN_ELEMENTS
        or not fused_l1_available()
    ):
        return False
    if _kernel is None:
        _kernel = torch.compile(_l1, dynamic=True, fullgraph=True)
    try:
        with _quiet_compiler() if not _compiled else nullcontext():
            for s, cols in enumerate(near_equal_runs(dim, FUSED_DIM_CHUNK)):
                aj = _plain(a[..., cols])
                for rows in near_equal_runs(m, FUSED_COLS):
                    part = _kernel(aj, _plain(b[:, rows, cols]))
                    if s == 0:
                        out[..., rows] = part
                    else:
                        out[..., rows] += part
    except Exception as error:  # the first call compiles: a missing compiler or platform shows here
        _disable(error)
        return False
    _compiled = True
    return True


def _disable(error: Exception) -> None:
    """Use the eager tiles for the rest of the process, and say why once."""
    global _failed
    _failed = True
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    warnings.warn(
        f"the compiled L1 cost kernel could not be built ({type(error).__name__}: {first_line[:300]}); "
        f"using the slower eager tiles. It needs a C++ compiler for torch.compile; set {ENV_SWITCH}=0 to "
        "skip the attempt",
        RuntimeWarning,
        stacklevel=3,
    )


class _quiet_compiler:
    """Silences torch's "No CUDA runtime is found" warning, which a CPU-only build logs on its
    first C++ compile and which means nothing here."""

    name = "torch.utils.cpp_extension"

    def __enter__(self) -> None:
        self.level = logging.getLogger(self.name).level
        logging.getLogger(self.name).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(self.name).setLevel(self.level)
