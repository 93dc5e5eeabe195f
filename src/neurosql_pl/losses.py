"""The reconstruction loss ℓ, used both to train the generator and as the assignment cost.

    ℓ(x, y) = a · LPIPS(x, y) + b · (1/P) Σ_j (x_j − y_j)²        (pixel="l2")
    ℓ(x, y) = a · LPIPS(x, y) + b · (1/P) Σ_j |x_j − y_j|          (pixel="l1")

with a = perceptual_weight, b = pixel_weight, P = C·H·W. For "l2" the whole loss is one
squared distance ‖F(x) − F(y)‖² of the embedding

    F(x) = concat[ sqrt(a) · φ(x), sqrt(b / P) · flatten(x) ]       (φ: see perceptual.py),

so a block of costs C[i, k] = ℓ(x_i, y_k) is one GEMM (``costs.pairwise_sq_dists``), n·m·D
flops. For "l1" the pixel term is not a squared distance: F holds only the perceptual part
and the L1 term is added from ``costs.pairwise_l1`` (n·m·P, no BLAS).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .costs import pairwise_l1, pairwise_sq_dists
from .images import check_images
from .perceptual import PERCEPTUAL_NAMES, PerceptualFeatures, build_perceptual

__all__ = ["ReconstructionLoss", "PIXEL_NAMES"]

PIXEL_NAMES: tuple[str, ...] = ("l1", "l2")


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
            pixel: "l2" (mean squared error), "l1" (mean absolute error) or None.
            pixel_weight: b ≥ 0, weight of the pixel term.
            pretrained_backbone: False = random lpips-* backbone (plumbing tests only).
            perceptual_input_size: see perceptual.build_perceptual (None: upsample < 32 px to 32 px).
        """
        super().__init__()
        if perceptual is not None and perceptual not in PERCEPTUAL_NAMES:
            raise ValueError(f"unknown perceptual {perceptual!r}; choose one of {', '.join(PERCEPTUAL_NAMES)} or None")
        if pixel is not None and pixel not in PIXEL_NAMES:
            raise ValueError(f"unknown pixel {pixel!r}; choose 'l1', 'l2' or None")
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
        if self.pixel is not None:
            diff = (x - y).float().flatten(1)
            per_pixel = diff.square() if self.pixel == "l2" else diff.abs()
            loss = loss + self.pixel_weight * per_pixel.mean(dim=1)
        return loss

    # ------------------------------------------------------------ GEMM features
    def features(self, x: Tensor) -> Tensor:
        """F(x) (B, D) float32 with ‖F(x) − F(y)‖² = the squared-distance part of ℓ(x, y).

        F = concat[sqrt(a)·φ(x), sqrt(b/P)·flatten(x)] for pixel="l2"; the pixel part is
        left out for "l1" (and D may be 0 when ℓ is a pure L1 loss). Keeps the graph.
        """
        check_images(x)
        parts = []
        if self.perceptual is not None:
            parts.append(self.perceptual(x) * self.perceptual_weight**0.5)
        if self.pixel == "l2":
            p = x.shape[1] * x.shape[2] * x.shape[3]
            parts.append(x.float().flatten(1) * (self.pixel_weight / p) ** 0.5)
        if not parts:
            return x.new_zeros(x.shape[0], 0, dtype=torch.float32)
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def features_batched(
        self, x: Tensor, batch_size: int = 256, out_device: torch.device | str | None = None
    ) -> Tensor:
        """F(x) for many images, (n, C, H, W) → (n, D), no grad, computed ``batch_size`` at a time.

        Batches run on the loss network's device (x's device when there is none); the result
        is stored on ``out_device`` (default: x's device). The L1 pixel part, if any, is not
        included: ``cost_matrix`` takes it from the images themselves.
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

    def feature_dim(self, image_shape: tuple[int, int, int]) -> int:
        """D of ``features`` for images of shape (C, H, W)."""
        c, h, w = (int(s) for s in image_shape)
        dim = self.perceptual.feature_dim((c, h, w)) if self.perceptual is not None else 0
        return dim + (c * h * w if self.pixel == "l2" else 0)

    @torch.no_grad()
    def cost_matrix(
        self,
        x: Tensor | None,
        y: Tensor,
        x_features: Tensor | None = None,
        chunk_size: int | None = 1024,
        batch_size: int = 256,
    ) -> Tensor:
        """C[i, k] = ℓ(x_i, y_k), (n, m) float32 on y's device, via GEMM on features.

        Args:
            x: (n, C, H, W) real images in [-1, 1]; may be None when ``x_features`` is given
                and pixel != "l1" (the L1 term needs the pixels).
            y: (m, C, H, W) images in [-1, 1] (e.g. generated G(Q_k)).
            x_features: optional precomputed ``features_batched(x)`` (n, D), e.g. cached once
                while the loss network is frozen.
            chunk_size: rows per GEMM / cdist call (bounds memory); None = all rows at once.
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
        expected = self.feature_dim(tuple(y.shape[1:]))
        if x_features.ndim != 2 or x_features.shape[1] != expected:
            raise ValueError(f"x_features must be (n, {expected}), got {tuple(x_features.shape)}")
        y_features = self.features_batched(y, batch_size, out_device=y.device)
        if expected > 0:
            cost = pairwise_sq_dists(x_features, y_features, chunk_size=chunk_size)
        else:
            cost = torch.zeros(n, y.shape[0], dtype=torch.float32, device=y.device)
        if self.pixel == "l1":
            if x is None:
                raise ValueError("pixel='l1' needs the x images in cost_matrix (the L1 term has no feature form)")
            p = y.shape[1] * y.shape[2] * y.shape[3]
            l1 = pairwise_l1(x.flatten(1).float(), y.flatten(1).float(), chunk_size=chunk_size)
            cost = cost + (self.pixel_weight / p) * l1.to(cost.dtype)
        return cost

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
