"""Which items a datamodule trains on: seeded train/validation splits and training subsets.

- `select_subset(n, k, mode, seed)`: the k of n training items to keep ("first" or "random").
- `split_train_val(n, val_fraction, seed)`: a seeded split of n items (or of n groups, such as
  subjects, whose items then follow their group) into training and validation positions.

Both return sorted int64 index tensors, so item order within a split is the source order.
"""

from __future__ import annotations

import torch
from torch import Tensor

SUBSET_MODES = ("first", "random")


def select_subset(n: int, k: int | None, mode: str, seed: int) -> Tensor:
    """Indices (sorted, int64) of the k training images to keep out of n; all n when k is None.

    "first": 0..k-1. "random": k distinct indices drawn with torch.Generator seeded by `seed`.
    """
    if mode not in SUBSET_MODES:
        raise ValueError(f"subset_mode must be one of {SUBSET_MODES}, got {mode!r}")
    if k is None:
        return torch.arange(n)
    if not 1 <= k <= n:
        raise ValueError(f"subset must be in 1..{n} (the number of training images), got {k}")
    if mode == "first":
        return torch.arange(k)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k].sort().values


def check_val_fraction(val_fraction: float) -> None:
    """Raise ValueError unless 0 ≤ val_fraction < 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded split of positions 0..n-1 → (train, val), each sorted int64.

    The validation part has round(val_fraction · n) items, but at least 1 when val_fraction > 0
    and at most n - 1 (training never ends up empty); they are drawn with torch.Generator seeded
    by `seed`. val_fraction = 0 → everything is training.
    """
    check_val_fraction(val_fraction)
    n_val = max(int(round(val_fraction * n)), 1) if val_fraction > 0 else 0
    n_val = min(n_val, max(n - 1, 0))
    if n_val == 0:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values
