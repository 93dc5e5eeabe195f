"""The reconstruction loss ℓ, used both to train the generator and as the assignment cost.

    ℓ(x, y) = a · LPIPS(x, y) + b · pix(x, y),    a = perceptual_weight, b = pixel_weight,

with one of three pixel terms on images of P = C·H·W values:

    "l2"            pix = (1/P) Σ_p (x_p − y_p)²
    "l1"            pix = (1/P) Σ_p |x_p − y_p|
    "laplacian_l1"  pix = Σ_{j=0..J} mean |L_j(x) − L_j(y)|       (J = PYRAMID_LEVELS = 3)

The Laplacian-pyramid L1 follows GLO (Bojanowski et al. 2018) in the form of
tneumann/minimal_glo's loss: the sum over 3 band-pass levels and the low-pass residual of
each level's mean absolute difference. Our pyramid (``laplacian_pyramid``): G_0 = x; band
j < J is L_j = G_j − blur(G_j) and G_{j+1} = down(blur(G_j)); the last level is the residual
L_J = G_J. blur is the 5-tap binomial filter [1, 4, 6, 4, 1]/16 along rows and columns with
replicated borders; down averages 2×2 cells (an odd side keeps its last row or column as a
1-wide cell). Each level's mean is over its P_j = C·H_j·W_j values (at 28 px grey: 784, 196,
49, 16), and the levels weigh equally, w_j = 1: a constant offset c costs |c|, as in "l1".

Two parts, each a distance between fixed feature vectors of one image:
  - a squared part ‖F(x) − F(y)‖², F(x) = concat[ sqrt(a) · φ(x), sqrt(b / P) · flatten(x) ]
    (φ: see perceptual.py; the pixel block only for "l2");
  - an L1 part ‖ψ(x) − ψ(y)‖₁, ψ(x) = (b / P) · flatten(x) for "l1" and
    ψ(x) = concat_j (b · w_j / P_j) · flatten(L_j(x)) for "laplacian_l1". The pyramid is
    linear, L_j(x) − L_j(y) = L_j(x − y), so this is exactly the pixel term.
So ℓ(x, y) = ‖F(x) − F(y)‖² + ‖ψ(x) − ψ(y)‖₁, and a block of costs C[i, k] = ℓ(x_i, y_k) is
one GEMM on F (``costs.pairwise_sq_dists``, n·m·D_F flops) plus one ``costs.pairwise_l1`` on
ψ (n·m·D_ψ, no BLAS). ``features`` gives [F, ψ] side by side (D_F + D_ψ columns,
``feature_dims``), which is what the feature banks of assignment_costs.py store.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .costs import pairwise_l1, pairwise_sq_dists
from .images import check_images
from .perceptual import PERCEPTUAL_NAMES, PerceptualFeatures, build_perceptual

__all__ = ["ReconstructionLoss", "PIXEL_NAMES", "PYRAMID_LEVELS", "laplacian_pyramid", "pyramid_sizes"]

PIXEL_NAMES: tuple[str, ...] = ("l1", "l2", "laplacian_l1")
L1_PIXELS: tuple[str, ...] = ("l1", "laplacian_l1")  # pixel terms that form the L1 part ψ
PYRAMID_LEVELS = 3  # band-pass levels of "laplacian_l1", plus the low-pass residual
_BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def laplacian_pyramid(x: Tensor, levels: int = PYRAMID_LEVELS) -> list[Tensor]:
    """[L_0, …, L_{levels−1}, G_levels] of x (B, C, H, W), any real values (see the module docstring).

    Linear in x. Level j has sides ceil(H / 2^j) × ceil(W / 2^j).
    """
    pyramid, g = [], x
    for _ in range(levels):
        blurred = _blur(g)
        pyramid.append(g - blurred)
        g = F.avg_pool2d(blurred, 2, ceil_mode=True)
    pyramid.append(g)
    return pyramid


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial filter per channel, replicated borders; same shape as x."""
    c = x.shape[1]
    taps = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device)
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, taps.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyramid_sizes(image_shape: tuple[int, int, int], levels: int = PYRAMID_LEVELS) -> list[int]:
    """P_j = C·H_j·W_j of every level of ``laplacian_pyramid`` for images of shape (C, H, W)."""
    c, h, w = (int(s) for s in image_shape)
    return [c * math.ceil(h / 2**j) * math.ceil(w / 2**j) for j in range(levels + 1)]


class ReconstructionLoss(nn.Module):
    """Per-sample loss ℓ(x_i, y_i) (B,) on images (B, C, H, W) in [-1, 1], plus its cost matrices."""

    def __init__(
        self,
        perceptual: str | None = "stlpips-alex",
        perceptual_weight: float = 1.0,
        pixel: str | None = "l2",
        pixel_weight: float = 1.0,
        pretrained_backbone: bool = True,
        perceptual_input_size: int | None = None,
    ) -> None:
        """
        Args:
            perceptual: LPIPS backend (one of perceptual.PERCEPTUAL_NAMES) or None for no LPIPS term.
            perceptual_weight: a ≥ 0, weight of the LPIPS term.
            pixel: "l2" (mean squared error), "l1" (mean absolute error), "laplacian_l1"
                (Laplacian-pyramid L1, see the module docstring) or None.
            pixel_weight: b ≥ 0, weight of the pixel term.
            pretrained_backbone: False = random lpips-* backbone (plumbing tests only).
            perceptual_input_size: see perceptual.build_perceptual (None: upsample < 32 px to 32 px).
        """
        super().__init__()
        if perceptual is not None and perceptual not in PERCEPTUAL_NAMES:
            raise ValueError(f"unknown perceptual {perceptual!r}; choose one of {', '.join(PERCEPTUAL_NAMES)} or None")
        if pixel is not None and pixel not in PIXEL_NAMES:
            raise ValueError(f"unknown pixel {pixel!r}; choose one of {', '.join(PIXEL_NAMES)} or None")
        for label, w in (("perceptual_weight", perceptual_weight), ("pixel_weight", pixel_weight)):
            if not (float(w) >= 0.0 and float(w) < float("inf")):
                raise ValueError(f"{label} must be a finite number >= 0, got {w}")
        use_perc = perceptual is not None and perceptual_weight > 0
        use_pix = pixel is not None and pixel_weight > 0
        if not (use_perc or use_pix):
            raise ValueError(
                "the loss has no term: set perceptual (with perceptual_weight > 0) and/or pixel "
                f"(with pixel_weight > 0); got perceptual={perceptual!r} (weight {perceptual_weight}), "
                f"pixel={pixel!r} (weight {pixel_weight})"
            )
        self.perceptual_name = perceptual if use_perc else None
        self.perceptual_weight = float(perceptual_weight)
        self.pixel = pixel if use_pix else None
        self.pixel_weight = float(pixel_weight)
        self.perceptual: PerceptualFeatures | None = (
            build_perceptual(perceptual, pretrained_backbone, perceptual_input_size) if use_perc else None
        )

    # ------------------------------------------------------------------ the loss
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """ℓ(x_i, y_i) for paired batches x, y (B, C, H, W) in [-1, 1] → (B,) float32; differentiable in both."""
        if x.shape != y.shape:
            raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        check_images(x)
        loss = x.new_zeros(x.shape[0], dtype=torch.float32)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual.distance(x, y)
        if self.pixel == "l2":
            loss = loss + self.pixel_weight * (x - y).float().flatten(1).square().mean(dim=1)
        elif self.pixel in L1_PIXELS:
            loss = loss + self._psi((x - y).float()).abs().sum(dim=1)  # ψ is linear: ψ(x) − ψ(y) = ψ(x − y)
        return loss

    # ------------------------------------------------------------ features
    def features(self, x: Tensor) -> Tensor:
        """[F(x), ψ(x)] (B, D_F + D_ψ) float32 (see the module docstring); keeps the graph.

        ℓ(x, y) = ``distance_from_features(features(x), features(y), image_shape)``. D_F or D_ψ
        may be 0 (no squared part for a pure L1 loss, no L1 part for "l2" or None).
        """
        check_images(x)
        parts = []
        if self.perceptual is not None:
            parts.append(self.perceptual(x) * self.perceptual_weight**0.5)
        if self.pixel == "l2":
            p = x.shape[1] * x.shape[2] * x.shape[3]
            parts.append(x.float().flatten(1) * (self.pixel_weight / p) ** 0.5)
        if self.pixel in L1_PIXELS:
            parts.append(self._psi(x.float()))
        if not parts:
            return x.new_zeros(x.shape[0], 0, dtype=torch.float32)
        return torch.cat(parts, dim=1)

    def _psi(self, x: Tensor) -> Tensor:
        """ψ(x) (B, D_ψ) of a float (B, C, H, W) tensor (no range check: also takes differences)."""
        if self.pixel == "l1":
            return x.flatten(1) * (self.pixel_weight / (x.shape[1] * x.shape[2] * x.shape[3]))
        levels = laplacian_pyramid(x)
        return torch.cat([level.flatten(1) * (self.pixel_weight / level[0].numel()) for level in levels], dim=1)

    @torch.no_grad()
    def features_batched(
        self, x: Tensor, batch_size: int = 256, out_device: torch.device | str | None = None
    ) -> Tensor:
        """``features`` for many images, (n, C, H, W) → (n, D_F + D_ψ), no grad, ``batch_size`` at a time.

        Batches run on the loss network's device (x's device when there is none); the result
        is stored on ``out_device`` (default: x's device).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_images(x)
        device = self._device(x)
        out_device = x.device if out_device is None else torch.device(out_device)
        dim = self.feature_dim(tuple(x.shape[1:]))
        out = torch.empty(x.shape[0], dim, dtype=torch.float32, device=out_device)
        for s in range(0, x.shape[0], batch_size):
            out[s : s + batch_size] = self.features(x[s : s + batch_size].to(device)).to(out_device)
        return out

    def feature_dims(self, image_shape: tuple[int, int, int]) -> tuple[int, int]:
        """(D_F, D_ψ): the columns of ``features`` in its squared part and in its L1 part, for images (C, H, W)."""
        c, h, w = (int(s) for s in image_shape)
        d_sq = self.perceptual.feature_dim((c, h, w)) if self.perceptual is not None else 0
        if self.pixel == "l2":
            d_sq += c * h * w
        d_l1 = {"l1": c * h * w, "laplacian_l1": sum(pyramid_sizes((c, h, w)))}.get(self.pixel, 0)
        return d_sq, d_l1

    def feature_dim(self, image_shape: tuple[int, int, int]) -> int:
        """D_F + D_ψ, the width of ``features`` for images of shape (C, H, W)."""
        return sum(self.feature_dims(image_shape))

    # ------------------------------------------------------------ from features
    def distance_from_features(self, fx: Tensor, fy: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        """ℓ(x_i, y_i) (B,) from paired ``features`` fx, fy (B, D) of images of shape (C, H, W)."""
        split = self.feature_dims(image_shape)[0]
        diff = fx - fy
        return diff[:, :split].square().sum(dim=1) + diff[:, split:].abs().sum(dim=1)

    def cost_from_features(
        self, fx: Tensor, fy: Tensor, image_shape: tuple[int, int, int], chunk_size: int | None = None
    ) -> Tensor:
        """C[i, k] = ℓ(x_i, y_k) from ``features`` fx (n, D), fy (m, D) → (n, m) on fy's device.

        Also takes stacks fx (k, n, D), fy (k, m, D) of k blocks → (k, n, m). The GEMM on the
        F columns plus ``pairwise_l1`` on the ψ columns; chunk_size: rows of fx per call.
        """
        split = self.feature_dims(image_shape)[0]
        if split == fx.shape[-1]:
            return pairwise_sq_dists(fx, fy, chunk_size=chunk_size)
        l1 = pairwise_l1(fx[..., split:], fy[..., split:], chunk_size=chunk_size)
        if split == 0:
            return l1
        return l1.add_(pairwise_sq_dists(fx[..., :split], fy[..., :split], chunk_size=chunk_size))

    @torch.no_grad()
    def cost_matrix(
        self,
        x: Tensor | None,
        y: Tensor,
        x_features: Tensor | None = None,
        chunk_size: int | None = 1024,
        batch_size: int = 256,
    ) -> Tensor:
        """C[i, k] = ℓ(x_i, y_k), (n, m) float32 on y's device, from the images' features.

        Args:
            x: (n, C, H, W) real images in [-1, 1]; may be None when ``x_features`` is given.
            y: (m, C, H, W) images in [-1, 1] (e.g. generated G(Q_k)).
            x_features: optional precomputed ``features_batched(x)`` (n, D), e.g. cached once
                while the loss network is frozen.
            chunk_size: rows per GEMM / L1 call (bounds memory); None = all rows at once.
            batch_size: images per network pass when computing features.
        """
        check_images(y)
        if x is not None:
            check_images(x)
            if x.shape[1:] != y.shape[1:]:
                raise ValueError(f"x and y image shapes differ: {tuple(x.shape[1:])} vs {tuple(y.shape[1:])}")
        if x_features is None:
            if x is None:
                raise ValueError("cost_matrix needs x images or x_features")
            x_features = self.features_batched(x, batch_size, out_device=y.device)
        n = x_features.shape[0]
        if x is not None and x.shape[0] != n:
            raise ValueError(f"x has {x.shape[0]} images but x_features has {n} rows")
        shape = tuple(y.shape[1:])
        expected = self.feature_dim(shape)
        if x_features.ndim != 2 or x_features.shape[1] != expected:
            raise ValueError(f"x_features must be (n, {expected}), got {tuple(x_features.shape)}")
        y_features = self.features_batched(y, batch_size, out_device=y.device)
        return self.cost_from_features(x_features, y_features, shape, chunk_size=chunk_size)

    def _device(self, x: Tensor) -> torch.device:
        if self.perceptual is not None:
            buf = next(iter(self.perceptual.buffers()), None)
            if buf is not None:
                return buf.device
        return x.device

    def extra_repr(self) -> str:
        return (
            f"perceptual={self.perceptual_name!r}, perceptual_weight={self.perceptual_weight}, "
            f"pixel={self.pixel!r}, pixel_weight={self.pixel_weight}"
        )
