"""GEMM cost matrices equal brute-force pairwise distances / pair-by-pair losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurosql_pl import costs
from neurosql_pl.costs import pairwise_l1, pairwise_sq_dists
from neurosql_pl.losses import ReconstructionLoss


def _brute_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a.double()[:, None, :] - b.double()[None, :, :]) ** 2).sum(-1)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got.double() - ref.double()).abs() / ref.double().abs().clamp_min(1e-12)).max())


def _images(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g) * 2 - 1


def test_sq_dists_float32_matches_brute_force_with_offset():
    g = torch.Generator().manual_seed(0)
    # A large common offset makes the naive ‖a‖² + ‖b‖² − 2ab form cancel badly in float32.
    a = torch.randn(37, 300, generator=g) * 0.1 + 5.0
    b = torch.randn(23, 300, generator=g) * 0.1 + 5.0
    got = pairwise_sq_dists(a, b)
    assert got.shape == (37, 23) and got.dtype == torch.float32
    assert _rel_err(got, _brute_sq(a, b)) <= 1e-4


def test_sq_dists_float64_near_exact_and_self_distance_zero():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20, 50, generator=g, dtype=torch.float64)
    b = torch.randn(30, 50, generator=g, dtype=torch.float64)
    got = pairwise_sq_dists(a, b)
    assert got.dtype == torch.float64
    assert _rel_err(got, _brute_sq(a, b)) <= 1e-12
    self_d = pairwise_sq_dists(a, a)
    assert torch.all(self_d >= 0)
    assert float(self_d.diagonal().abs().max()) <= 1e-12


@pytest.mark.parametrize("chunk", [1, 7, 20, 1000])
def test_chunking_gives_same_result(chunk):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(20, 64, generator=g), torch.randn(11, 64, generator=g)
    full = pairwise_sq_dists(a, b)
    torch.testing.assert_close(pairwise_sq_dists(a, b, chunk_size=chunk), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pairwise_l1(a, b, chunk_size=chunk), pairwise_l1(a, b), rtol=1e-6, atol=1e-6)


def test_l1_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(9, 40, generator=g), torch.randn(6, 40, generator=g)
    ref = (a[:, None, :] - b[None, :, :]).abs().sum(-1)
    assert _rel_err(pairwise_l1(a, b, chunk_size=4), ref) <= 1e-5


@pytest.mark.parametrize("dim_chunk", [7, 15, 30, 2048])
@pytest.mark.parametrize("tile_elements", [1, 500, 2**21])
def test_l1_tiles_cover_every_pair_exactly_once(monkeypatch, tile_elements, dim_chunk):
    """The CPU path's tiles (≤ 256 columns, rows by L1_TILE_ELEMENTS, slices of ≤ L1_DIM_CHUNK
    columns j) add up to the whole matrix, whatever the tile size: one row per tile, ragged last
    tiles, one tile for all; vectors of 30 in 5 slices of 6, 2 of 15, or whole."""
    monkeypatch.setattr(costs, "L1_TILE_ELEMENTS", tile_elements)
    monkeypatch.setattr(costs, "L1_DIM_CHUNK", dim_chunk)
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(37, 30, generator=g), torch.randn(300, 30, generator=g)
    ref = (a.double()[:, None, :] - b.double()[None, :, :]).abs().sum(-1)
    assert _rel_err(pairwise_l1(a, b, chunk_size=16), ref) <= 1e-5
    assert _rel_err(pairwise_l1(a.double(), b), ref) <= 1e-12
    torch.testing.assert_close(pairwise_l1(a, b), torch.cdist(a, b, p=1.0), rtol=1e-5, atol=1e-4)
    assert torch.equal(pairwise_l1(torch.ones(3, 0), torch.ones(4, 0)), torch.zeros(3, 4))  # D = 0: no columns


def _with_background(n: int, m: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a (n, dim) with columns 0–9 at −1 in every row (below every b there, as an image background
    under a tanh generator) and 10–14 at 1 (above every b), b (m, dim) in (−1, 1), the rest random."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, dim, generator=g) * 2 - 1, torch.rand(m, dim, generator=g) * 1.98 - 0.99
    a[:, :10], a[:, 10:15] = -1.0, 1.0
    return a, b


def test_l1_separable_columns_are_found_and_summed_exactly():
    """Known answer: the columns where every a lies below (or above) every b are exactly the
    planted ones, and the costs that take them in closed form are the pairwise L1 to float32
    rounding (float64 reference), for a block, a stack of blocks and row chunks alike."""
    a, b = _with_background(64, 48, 40, seed=13)
    below, columns = costs._separable_columns(a, b)
    assert below.nonzero().flatten().tolist() == list(range(10))
    assert columns.nonzero().flatten().tolist() == list(range(15))
    ref = (a.double()[:, None, :] - b.double()[None, :, :]).abs().sum(-1)
    assert _rel_err(pairwise_l1(a, b), ref) <= 1e-6
    assert _rel_err(pairwise_l1(a, b, chunk_size=5), ref) <= 1e-6
    assert _rel_err(pairwise_l1(a.double(), b.double()), ref) <= 1e-12
    dense = torch.empty(64, 48)
    costs._dense_l1_tiles(a, b, dense)
    torch.testing.assert_close(pairwise_l1(a, b), dense, rtol=1e-6, atol=1e-6)
    stack = torch.stack([a, _with_background(64, 48, 40, seed=14)[0]]), torch.stack([b, b.flip(0)])
    for j, block in enumerate(pairwise_l1(*stack)):
        assert _rel_err(block, (stack[0][j].double()[:, None] - stack[1][j].double()[None]).abs().sum(-1)) <= 1e-6
    all_separable = torch.full((64, 15), -1.0), b[:, :15]
    assert _rel_err(pairwise_l1(*all_separable), (all_separable[0][:, None] - all_separable[1][None]).abs().sum(-1)) <= 1e-6


def test_l1_without_separable_columns_is_the_dense_tiles():
    """Random a and b overlap in every column: nothing is separable and the costs are the dense tiles'."""
    g = torch.Generator().manual_seed(15)
    a, b = torch.randn(64, 30, generator=g), torch.randn(40, 30, generator=g)
    assert costs._separable_columns(a, b) is None
    dense = torch.empty(64, 40)
    costs._dense_l1_tiles(a, b, dense)
    assert torch.equal(pairwise_l1(a, b), dense)


def test_stacked_problems_equal_one_at_a_time():
    """(k, n, D) × (k, m, D) gives the k matrices that k separate calls give."""
    gen = torch.Generator().manual_seed(11)
    a, b = torch.randn(4, 6, 9, generator=gen), torch.randn(4, 5, 9, generator=gen) + 3.0
    stacked = pairwise_sq_dists(a, b, chunk_size=4)
    stacked_l1 = pairwise_l1(a, b, chunk_size=4)
    assert stacked_l1.shape == (4, 6, 5)
    for j in range(4):
        assert torch.allclose(stacked[j], pairwise_sq_dists(a[j], b[j]), rtol=1e-5, atol=1e-5)
        assert torch.allclose(stacked[j], torch.cdist(a[j], b[j]) ** 2, rtol=1e-4, atol=1e-4)
        assert torch.allclose(stacked_l1[j], torch.cdist(a[j], b[j], p=1.0), rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"expected \(n, D\)"):
        pairwise_sq_dists(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"expected \(n, D\)"):
        pairwise_sq_dists(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))  # stacks of different k
    with pytest.raises(ValueError, match=r"expected \(n, D\)"):
        pairwise_l1(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))  # stacks of different k
    with pytest.raises(ValueError, match="feature dimensions differ"):
        pairwise_sq_dists(torch.zeros(3, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="chunk_size"):
        pairwise_l1(torch.zeros(3, 4), torch.zeros(2, 4), chunk_size=0)


def _pairwise_forward(loss: ReconstructionLoss, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n, m = x.shape[0], y.shape[0]
    xx = x.repeat_interleave(m, dim=0)
    yy = y.repeat(n, 1, 1, 1)
    with torch.no_grad():
        return loss(xx, yy).view(n, m)


def _laplacian_l1_reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_j mean |L_j(x) − L_j(y)| per pair, written out apart from the library: the pyramids of x and
    y each (not of x − y), a 5×5 outer-product binomial kernel, odd sides replicated before 2×2 means."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16
    kernel = torch.outer(taps, taps)

    def pyramid(z: torch.Tensor) -> list[torch.Tensor]:
        levels, g = [], z.double()
        for _ in range(3):
            c = g.shape[1]
            blurred = F.conv2d(F.pad(g, (2, 2, 2, 2), mode="replicate"), kernel.expand(c, 1, 5, 5), groups=c)
            levels.append(g - blurred)
            g = F.pad(blurred, (0, blurred.shape[3] % 2, 0, blurred.shape[2] % 2), mode="replicate")
            g = F.avg_pool2d(g, 2)
        return levels + [g]

    return sum((lx - ly).abs().flatten(1).mean(1) for lx, ly in zip(pyramid(x), pyramid(y)))


def _pixel_reference(pixel: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    diff = (x - y).double().flatten(1)
    if pixel == "l2":
        return diff.square().mean(1)
    return diff.abs().mean(1) if pixel == "l1" else _laplacian_l1_reference(x, y)


@pytest.mark.parametrize("pixel", ["l2", "l1", "laplacian_l1"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 5), (1, 28, 28)])
def test_pixel_loss_is_its_formula(pixel, shape):
    """forward(x, y) = b · pix(x, y) for each pixel term, against a reference written apart."""
    loss = ReconstructionLoss(perceptual=None, pixel=pixel, pixel_weight=0.7)
    x, y = _images(6, shape, seed=4), _images(6, shape, seed=5)
    with torch.no_grad():
        got = loss(x, y)
    assert _rel_err(got, 0.7 * _pixel_reference(pixel, x, y)) <= 1e-5


def test_laplacian_l1_of_a_constant_offset_is_the_offset():
    """Band-pass levels of a constant image are 0 and its low-pass level is the constant, so a
    constant offset c costs |c|, as in "l1" (the level weights are 1)."""
    loss = ReconstructionLoss(perceptual=None, pixel="laplacian_l1")
    x = _images(3, (1, 28, 28), seed=13) * 0.5
    with torch.no_grad():
        assert torch.allclose(loss(x, x + 0.3), torch.full((3,), 0.3), atol=1e-6)


@pytest.mark.parametrize("pixel", ["l2", "l1", "laplacian_l1"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 5)])
def test_pixel_cost_matrix_equals_pairwise_forward(pixel, shape):
    loss = ReconstructionLoss(perceptual=None, pixel=pixel, pixel_weight=0.7)
    x, y = _images(10, shape, seed=4), _images(7, shape, seed=5)
    ref = _pairwise_forward(loss, x, y)
    direct = 0.7 * _pixel_reference(pixel, x[2:3], y[5:6])
    assert abs(float(ref[2, 5]) - float(direct)) <= 1e-6
    got = loss.cost_matrix(x, y, chunk_size=3)
    assert got.shape == (10, 7)
    assert _rel_err(got, ref) <= 1e-4


def test_mse_cost_with_precomputed_features():
    loss = ReconstructionLoss(perceptual=None, pixel="l2")
    x, y = _images(12, seed=6), _images(5, seed=7)
    feats = loss.features_batched(x, batch_size=5)
    assert feats.shape == (12, loss.feature_dim((1, 8, 8))) == (12, 64)
    got = loss.cost_matrix(None, y, x_features=feats)
    assert _rel_err(got, _pairwise_forward(loss, x, y)) <= 1e-4
    with pytest.raises(ValueError, match="x_features must be"):
        loss.cost_matrix(None, y, x_features=feats[:, :10])


@pytest.mark.parametrize("pixel", ["l1", "laplacian_l1"])
def test_l1_cost_from_precomputed_features_needs_no_images(pixel):
    """An L1 pixel term has features ψ too: cached features of x replace the images."""
    loss = ReconstructionLoss(perceptual=None, pixel=pixel)
    x, y = _images(4, seed=8), _images(3, seed=9)
    feats = loss.features_batched(x)
    assert loss.feature_dims((1, 8, 8)) == ((0, 64) if pixel == "l1" else (0, 64 + 16 + 4 + 1))
    assert feats.shape == (4, loss.feature_dim((1, 8, 8)))
    assert _rel_err(loss.cost_matrix(None, y, x_features=feats), _pairwise_forward(loss, x, y)) <= 1e-4


def test_costs_stay_exact_under_bf16_autocast_and_reduced_matmul_precision() -> None:
    """What a GPU trainer piece switches on (bf16-mixed, TF32 / "medium" matmuls) must not reach the
    assignment's cost GEMMs: they match the float64 reference, and the caller's setting comes back."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 96, generator=g) + 3.0, torch.randn(200, 96, generator=g) + 3.0  # offset: cancellation
    sq_ref, l1_ref = pairwise_sq_dists(a.double(), b.double()), pairwise_l1(a.double(), b.double())
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sq, l1 = pairwise_sq_dists(a, b), pairwise_l1(a, b)
            assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert sq.dtype == l1.dtype == torch.float32
    assert ((sq.double() - sq_ref).abs().max() / sq_ref.abs().max()).item() < 1e-5
    assert ((l1.double() - l1_ref).abs().max() / l1_ref.abs().max()).item() < 1e-5
