"""The cost side of the assignment step: C[i, k] = ℓ(X_i, G(Q_k)) and the features it comes from.

ℓ is the training loss itself, ℓ(x, y) = ‖F(x) − F(y)‖² + ‖ψ(x) − ψ(y)‖₁ (`losses.py`), so a
block of costs is a GEMM on F plus exact pairwise L1 on ψ once the features [F, ψ] of both
sides are known (docs/design.md §2). `AssignmentCosts` holds everything those features come
from, for one fit (the module builds it when training starts and drops it when it ends):
  - real features [F, ψ](X_i) of every training image, one `FeatureBank` row per dataset index
    (N rows), computed once; the training loss reads them too (`loss`);
  - generated features [F, ψ](G(Q_k)), one row per lattice index (K rows), from where `mode` says:
      "epoch"  recorded by this epoch's training steps (`loss`: with ρ = 1, G(Ẑ_i) = G(Q_π(i))),
               kept in a bank for the whole fit and emptied at every step's end; points no
               step recorded are computed fresh (with k codes per image an epoch trains N of
               the K codes, so about (k − 1)·N points are);
      "fresh"  computed at the assignment step, block by block, or all at once into a bank made
               for the step when it scores each lattice point more than once (`begin_step`);
  - neither bank when N·D values exceed feature_cache_gb: fresh generator and loss passes.
The assignment's samples are codes (`oversampling.py`): K = k·N of them, one per lattice point,
code v belonging to image v mod N; with k = 1 (K = N) codes are dataset indices.
One assignment step: `begin_step`, then any number of `block_costs` (and `features` for blocks
built from features, `pair_costs` for single pairs), then `end_step`, which forgets the generated features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from .feature_bank import FeatureBank
from .images import ImageSource
from .losses import ReconstructionLoss
from .oversampling import copies_per_image, image_of

__all__ = ["BATCH", "COST_OUTPUTS", "AssignmentCosts", "CostOutputs", "check_cost_outputs"]

#: where the assignment's generated features come from (see the module docstring)
CostOutputs = Literal["fresh", "epoch"]
COST_OUTPUTS: tuple[CostOutputs, ...] = ("fresh", "epoch")
BATCH = 512  # images per generator / loss-network pass outside training (feature banks, costs, sampling)
POOLED_SIDE = 8  # side of the average-pooled pixels that stand in for features without banks


def check_cost_outputs(mode: str, rho: float | None = None, code_noise: float | None = None) -> None:
    """Raise ValueError unless `mode` is one of COST_OUTPUTS and, for "epoch", training's
    generator input is Q_π exactly: ρ (when given) = 1 and code_noise σ (when given) = 0."""
    if mode not in COST_OUTPUTS:
        raise ValueError(f"cost_outputs must be 'fresh' or 'epoch', got {mode!r}")
    if mode == "epoch" and rho is not None and rho != 1.0:
        raise ValueError(
            f"cost_outputs='epoch' reuses G(Ẑ_i) = G(Q_π(i)) from training, which needs rho=1; got rho={rho}"
        )
    if mode == "epoch" and code_noise:
        raise ValueError(
            f"cost_outputs='epoch' reuses G(Ẑ_i) = G(Q_π(i)) from training, but code_noise={code_noise} trains on "
            "G(Ẑ_i + σ·ε); set cost_outputs='fresh' (--model.cost_outputs fresh) or code_noise=0"
        )


class AssignmentCosts:
    """The feature banks of one fit and the block costs computed from them (or without them)."""

    def __init__(
        self,
        loss_fn: ReconstructionLoss,
        lattice: Tensor,
        generate: Callable[[Tensor], Tensor],
        images_at: ImageSource,
        image_shape: tuple[int, int, int],
        mode: CostOutputs,
        feature_cache_gb: float,
        device: torch.device,
        num_images: int | None = None,
    ) -> None:
        """Compute the real features (within feature_cache_gb GiB per bank, else none).

        Args:
            loss_fn: the loss ℓ (its features and cost matrices).
            lattice: Q (K, d) on `device`, one row per lattice point (and per code).
            generate: codes (B, d) → G(codes) (B, C, H, W) in [-1, 1] on `device`, by the live
                generator in eval mode (the module's; read at every call).
            images_at: dataset indices (k,) → training images (k, C, H, W) in [-1, 1].
            image_shape: (C, H, W) of the images.
            mode: "fresh" or "epoch" (`COST_OUTPUTS`, see the module docstring).
            feature_cache_gb: memory budget of each bank in GiB; 0 = no banks.
            device: where features are compared (the module's device).
            num_images: N, the number of training images; K must be a multiple k·N of it
                (`oversampling.py`); default K (one code per image).
        """
        check_cost_outputs(mode)
        self.loss_fn, self.lattice, self.generate, self.images_at = loss_fn, lattice, generate, images_at
        self.image_shape, self.mode, self.device = tuple(image_shape), mode, device
        self.feature_cache_gb = feature_cache_gb
        self.num_codes = int(lattice.shape[0])  # K: codes = lattice points
        self.num_images = self.num_codes if num_images is None else int(num_images)  # N
        self.copies = copies_per_image(self.num_codes, self.num_images)  # k
        self.real_bank = self._real_features()  # [F, ψ](X_i), rows = dataset index
        # [F, ψ](G(Q_k)), rows = lattice index: for the fit in mode "epoch", for one step in mode "fresh"
        self.fake_bank = self._bank(self.num_codes) if mode == "epoch" and self.real_bank is not None else None

    def _bank(self, rows: int) -> FeatureBank | None:
        """An empty (rows, D) bank within feature_cache_gb, or None where it does not fit."""
        return FeatureBank.within_budget(rows, self.loss_fn.feature_dim(self.image_shape), self.feature_cache_gb)

    def _real_features(self) -> FeatureBank | None:
        """[F, ψ](X_i) of every training image in an (N, D) bank, BATCH images per pass; None
        (with a warning) when the bank does not fit feature_cache_gb."""
        bank = self._bank(self.num_images)
        if bank is None:
            n, dim = self.num_images, self.loss_fn.feature_dim(self.image_shape)
            rank_zero_warn(f"real-image features ({n}×{dim}) exceed feature_cache_gb={self.feature_cache_gb}; computing them per step")
            return None
        for rows in torch.arange(self.num_images).split(BATCH):
            bank.put(rows, self.loss_fn.features_batched(self.images_at(rows).to(self.device), batch_size=BATCH))
        return bank

    # ---------------------------------------------------------------- training
    def loss(self, fake: Tensor, real: Tensor, samples: Tensor, points: Tensor) -> Tensor:
        """ℓ(X_i, G(Ẑ_v)) (B,) of a training batch, differentiable in `fake`.

        fake = G(Ẑ_v) for the code v trained (v = i when k = 1) and real = X_i: (B, C, H, W) in
        [-1, 1]; samples: the dataset indices i (B,); points: π(v) (B,). From the real bank where
        there is one (no φ(X_i) pass); in mode "epoch" the features of G(Ẑ_v) = G(Q_π(v)) are
        recorded at `points`.
        """
        if self.real_bank is None:
            return self.loss_fn(fake, real)
        fake_features = self.loss_fn.features(fake)
        real_features = self.real_bank.get(samples, fake.device)
        per_sample = self.loss_fn.distance_from_features(fake_features, real_features, fake.shape[1:])
        if self.mode == "epoch" and self.fake_bank is not None:
            self.fake_bank.put(points, fake_features)
        return per_sample

    # ---------------------------------------------------------------- one assignment step
    @torch.no_grad()
    def begin_step(self, repeated: bool) -> float:
        """Start an assignment step; returns the fraction of lattice points whose generated
        features this epoch's training recorded (0 without a generated bank).

        repeated: the step scores each lattice point more than once (several sweeps,
        multiscale blocks). Then the features of every G(Q_k) not recorded are computed now,
        once (mode "fresh": into a bank made for this step), and `block_costs` is GEMMs and
        L1 distances on stored features only; without banks it stays fresh passes per block.
        """
        if repeated and self.real_bank is not None and self.fake_bank is None:
            self.fake_bank = self._bank(self.num_codes)
        reused = float(self.fake_bank.filled.float().mean()) if self.fake_bank is not None else 0.0
        if repeated and self.fake_bank is not None:
            for rows in (~self.fake_bank.filled).nonzero().flatten().split(BATCH):
                self.fake_bank.put(rows, self._generated_features(rows))
        return reused

    @torch.no_grad()
    def block_costs(self, samples: Tensor, points: Tensor) -> Tensor:
        """Costs of k equal-size blocks at once: samples, points (k, b) → (k, b, b) on `device`.

        samples are codes in [0, K) (dataset indices when k = 1), points lattice indices;
        C[j, i, l] = ℓ(X_{samples[j, i] mod N}, G(Q_points[j, l])) ≥ 0, float32, with the
        generator in eval mode.
        """
        k, b = samples.shape
        samples = image_of(samples, self.num_images)
        if self.real_bank is not None:
            x = self.real_bank.get(samples.flatten(), self.device).view(k, b, -1)
            y = self._generated_features(points.flatten()).view(k, b, -1)
            return self.loss_fn.cost_from_features(x, y, self.image_shape)
        costs = []
        for s, p in zip(samples, points):
            fake = self._generated_images(p)
            costs.append(self.loss_fn.cost_matrix(self.images_at(s).to(self.device), fake, batch_size=BATCH))
        return torch.stack(costs)

    @torch.no_grad()
    def pair_costs(self, samples: Tensor, points: Tensor) -> Tensor | None:
        """C[samples[j], points[j]] (n,) float32 on the CPU: one cost per (code, lattice point)
        pair, from the stored features (N·D work, no block); None where the generated features
        are not all stored (no banks, or before `begin_step(repeated=True)`): then they would
        need generator passes."""
        if self.real_bank is None or self.fake_bank is None or not self.fake_bank.complete:
            return None
        samples = image_of(samples, self.num_images)
        out = torch.empty(len(samples))
        for rows in torch.arange(len(samples)).split(8 * BATCH):
            x = self.real_bank.get(samples[rows], self.device)
            y = self.fake_bank.get(points[rows], self.device)
            out[rows] = self.loss_fn.distance_from_features(x, y, self.image_shape).float().cpu()
        return out

    def blocks_per_call(self, block_size: int) -> int:
        """How many blocks of `block_size` one `block_costs` call should take: with the feature
        banks, as many as keep their stacked features under ~256 MiB (one batched GEMM and L1
        pass); else 1."""
        if self.real_bank is None:
            return 1
        return max(1, 2**28 // (2 * block_size * self.real_bank.values.shape[1] * 4))

    @torch.no_grad()
    def features(self, generated: bool = True) -> tuple[Tensor, Tensor | None]:
        """Features of every image X_i (N, D) (rows: dataset index; `oversampling.per_code`
        spreads them over the K codes) and, if `generated`, of every G(Q_k) (K, D) (rows:
        lattice index) in one space, for blocks built from features: the
        banks (the generated one complete after `begin_step(repeated=True)`), else a proxy,
        POOLED_SIDE² average-pooled pixels per channel (of fresh passes for the generated images)."""
        complete = self.fake_bank is not None and self.fake_bank.complete
        if self.real_bank is not None and (complete or not generated):
            return self.real_bank.values, self.fake_bank.values if generated else None
        def pooled(images: Tensor) -> Tensor:
            return nn.functional.adaptive_avg_pool2d(images.float().cpu(), POOLED_SIDE).flatten(1)

        real = torch.cat([pooled(self.images_at(r)) for r in torch.arange(self.num_images).split(BATCH)])
        if not generated:
            return real, None
        return real, torch.cat([pooled(self._generated_images(r)) for r in torch.arange(self.num_codes).split(BATCH)])

    def end_step(self) -> None:
        """End an assignment step: forget the generated features (mode "epoch": the bank stays,
        emptied for the next epoch's records; mode "fresh": the step's bank is dropped)."""
        if self.fake_bank is None:
            return
        self.fake_bank.clear()
        if self.mode != "epoch":
            self.fake_bank = None

    # ---------------------------------------------------------------- generated images
    def _generated_images(self, points: Tensor) -> Tensor:
        """G(Q_k) (len(points), C, H, W) in [-1, 1] for lattice indices `points`."""
        return self.generate(self.lattice[points.to(self.device)])

    def _generated_features(self, points: Tensor) -> Tensor:
        """[F, ψ](G(Q_k)) (len(points), D) on `device`: recorded this epoch where they are, else fresh."""
        device, bank = self.device, self.fake_bank
        recorded = bank.filled[points] if bank is not None else torch.zeros(len(points), dtype=torch.bool)
        feats = torch.empty(len(points), self.real_bank.values.shape[1], device=device)
        if recorded.any():
            feats[recorded.to(device)] = bank.get(points[recorded], device)
        if not recorded.all():
            fresh = self._generated_images(points[~recorded])
            feats[(~recorded).to(device)] = self.loss_fn.features_batched(fresh, BATCH)
        return feats
