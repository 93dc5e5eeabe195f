"""Loss features kept in memory between assignment steps (docs/design.md §2).

The loss is ℓ(x, y) = ‖F(x) − F(y)‖² + ‖ψ(x) − ψ(y)‖₁ (squared part: LPIPS and/or MSE; L1
part: pixel L1 or Laplacian-pyramid L1; see `losses.py`), so an assignment step needs the
features [F, ψ] of every training image and of every G(Q_k). A bank holds them side by side,
one row per image, D_F + D_ψ columns (`ReconstructionLoss.feature_dims` gives the split).
  - The real images' features do not change while the loss network is frozen: they are
    computed once per fit and also serve the training loss (no φ(X) pass per step).
  - With ρ = 1 the training step computes G(Q_π(j)) for every sample j once per epoch; its
    features can be recorded by lattice point and reused by the epoch-end assignment
    (`cost_outputs="epoch"`), which then costs only GEMMs, L1 distances and LSAPs. Rows
    recorded early in the epoch come from an older generator; rows never recorded are
    computed fresh.
A bank is float32 when N·D·4 bytes fit the budget, float16 (relative rounding 5e-4; absolute
3e-8 below 6e-5) when only half of that fits, and absent otherwise. Per 28 px grey image:
MSE 784 values, L1 784, Laplacian L1 1,045 (784 + 196 + 49 + 16), ST-LPIPS 36,288 more.
"""

from __future__ import annotations

import torch


def bank_dtype(rows: int, dim: int, budget_gb: float) -> torch.dtype | None:
    """float32 or float16 for a (rows, dim) bank within `budget_gb` GiB, or None if neither fits."""
    for dtype in (torch.float32, torch.float16):
        if rows * dim * dtype.itemsize <= budget_gb * 2**30:
            return dtype
    return None


class FeatureBank:
    """(rows, D) features on the CPU with a mask of the rows written since the last `clear`."""

    def __init__(self, rows: int, dim: int, dtype: torch.dtype) -> None:
        self.values = torch.zeros(rows, dim, dtype=dtype)
        self.filled = torch.zeros(rows, dtype=torch.bool)

    @classmethod
    def within_budget(cls, rows: int, dim: int, budget_gb: float) -> FeatureBank | None:
        dtype = bank_dtype(rows, dim, budget_gb)
        return None if dtype is None else cls(rows, dim, dtype)

    def put(self, rows: torch.Tensor, features: torch.Tensor) -> None:
        """Store features (B, D) at rows (B,)."""
        rows = rows.cpu()
        self.values[rows] = features.detach().to("cpu", self.values.dtype)
        self.filled[rows] = True

    def get(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """Features at rows (B,) as float32 (B, D) on `device`."""
        return self.values[rows.cpu()].to(device=device, dtype=torch.float32)

    def clear(self) -> None:
        self.filled.zero_()

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())
