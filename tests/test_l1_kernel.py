"""The compiled L1 kernel gives the pairwise L1 costs, and its absence falls back to the tiles."""

from __future__ import annotations

import pytest
import torch

from neurosql_pl import costs, l1_kernel
from neurosql_pl.costs import pairwise_l1


def _reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double()[:, None, :] - b.double()[None, :, :]).abs().sum(-1)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got.double() - ref).abs() / ref.abs().clamp_min(1e-12)).max())


@pytest.fixture
def small_kernel_problems(monkeypatch):
    """The kernel for problems of any size, in slices of 7 columns and runs of 5 rows, and a
    clean failure state (restored afterwards)."""
    monkeypatch.setattr(l1_kernel, "FUSED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(l1_kernel, "FUSED_DIM_CHUNK", 7)
    monkeypatch.setattr(l1_kernel, "FUSED_COLS", 5)
    monkeypatch.setattr(l1_kernel, "_failed", False)
    monkeypatch.delenv(l1_kernel.ENV_SWITCH, raising=False)


def test_fused_kernel_is_the_pairwise_l1(small_kernel_problems):
    """Known answer: ragged slices of the columns (30 = 5 × 6 of ≤ 7) and runs of the rows
    (23 = 4 × 6 − 1 of ≤ 5) add up to the float64 pairwise L1, to float32 rounding; the eager
    tiles agree; the separable-column path of pairwise_l1 and a stack of blocks go through it."""
    g = torch.Generator().manual_seed(21)
    a, b = torch.randn(37, 30, generator=g), torch.randn(23, 30, generator=g)
    out = torch.full((37, 23), float("nan"))
    assert l1_kernel.fused_l1(a, b, out)
    assert _rel_err(out, _reference(a, b)) <= 1e-6
    tiles = torch.empty(37, 23)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(l1_kernel.ENV_SWITCH, "0")
        assert not l1_kernel.fused_l1(a, b, tiles)  # switched off: the caller's tiles run
        costs._dense_l1_tiles(a, b, tiles)
    torch.testing.assert_close(out, tiles, rtol=1e-6, atol=1e-5)
    a[:, :4] = -1.0  # background columns (the tiles' closed form): the kernel takes every column
    b[:, :4] = b[:, :4].abs()
    assert _rel_err(pairwise_l1(a, b), _reference(a, b)) <= 1e-6
    stack_a, stack_b = torch.stack([a, a.flip(0), -a]), torch.stack([b, -b, b.flip(1)])
    stacked = torch.empty(3, 37, 23)
    assert l1_kernel.fused_l1(stack_a, stack_b, stacked)  # three blocks in one call
    for j in range(3):
        assert _rel_err(stacked[j], _reference(stack_a[j], stack_b[j])) <= 1e-6
        torch.testing.assert_close(pairwise_l1(stack_a, stack_b, chunk_size=10)[j], stacked[j], rtol=1e-6, atol=1e-5)


def test_fused_kernel_only_for_large_float32_cpu_problems(monkeypatch):
    """Below FUSED_MIN_ELEMENTS differences, for float64, and for a side below 2 it declines and
    leaves `out` alone (pairwise_l1 then uses the tiles: the same costs)."""
    monkeypatch.setattr(l1_kernel, "_failed", False)
    monkeypatch.delenv(l1_kernel.ENV_SWITCH, raising=False)
    out = torch.full((4, 3), 7.0)
    assert not l1_kernel.fused_l1(torch.ones(4, 5), torch.zeros(3, 5), out)  # 60 ≪ FUSED_MIN_ELEMENTS
    monkeypatch.setattr(l1_kernel, "FUSED_MIN_ELEMENTS", 0)
    assert not l1_kernel.fused_l1(torch.ones(4, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64), out)
    assert not l1_kernel.fused_l1(torch.ones(1, 5), torch.zeros(3, 5), out[:1])
    assert torch.equal(out, torch.full((4, 3), 7.0))


def test_a_kernel_that_cannot_be_built_warns_once_and_the_tiles_give_the_costs(small_kernel_problems, monkeypatch):
    """A build failure (here: the compiler raises, as with no C++ compiler) is one warning; the
    costs are still exact (the tiles), and later calls do not try again."""
    calls = []

    def broken(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("InductorError: CppCompileError: C++ compile error\nmore detail")

    monkeypatch.setattr(l1_kernel, "_kernel", broken)
    g = torch.Generator().manual_seed(22)
    a, b = torch.randn(12, 9, generator=g), torch.randn(10, 9, generator=g)
    with pytest.warns(RuntimeWarning, match="could not be built .*CppCompileError.*NEUROSQL_FUSED_L1=0"):
        got = pairwise_l1(a, b)
    assert _rel_err(got, _reference(a, b)) <= 1e-6
    assert not l1_kernel.fused_l1_available()
    with torch.no_grad():
        again = pairwise_l1(a, b)
    assert len(calls) == 1 and torch.equal(again, got)
