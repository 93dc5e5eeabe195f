"""The image contract every model, loss and metric of the project shares, checked in one place.

Images are float tensors of shape (B, C, H, W) with C ∈ {1, 3} and values in [-1, 1]
(datamodules map uint8 pixels p to p / 127.5 − 1). `check_images` enforces it at the
boundaries (losses, perceptual features, metric feature extractors); `to_uint8` and
`image_grid` turn such images into uint8 arrays for PNG files, `.npz` files and W&B.
`ImageSource` is how the training images are read by dataset index, and `trainer_images` the
one that the trainer's datamodule provides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L

__all__ = ["ImageSource", "check_images", "image_grid", "to_uint8", "trainer_images"]

#: dataset indices (k,) long → images (k, C, H, W) float in [-1, 1]
ImageSource = Callable[[Tensor], Tensor]

RANGE_SLACK: float = 0.5  # with check_range, values outside [-1 - slack, 1 + slack] are refused


def check_images(x: object, who: str = "images", check_range: bool = False) -> None:
    """Raise ValueError (naming `who`) unless x is a float (B, C, H, W) tensor with C ∈ {1, 3}.

    With `check_range` the values must also lie in [-1, 1] (up to RANGE_SLACK, for the
    overshoot of a generator): this catches images in [0, 255] or [0, 1]·255 by mistake.
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who}: expected images of shape (B, C, H, W), got {shape}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{who}: expected 1 or 3 channels, got C={x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected a float tensor with values in [-1, 1], got {x.dtype}")
    if check_range and x.numel() > 0:
        lo, hi = torch.aminmax(x.detach())
        if lo.item() < -1 - RANGE_SLACK or hi.item() > 1 + RANGE_SLACK:
            raise ValueError(f"{who}: expected values in [-1, 1], got min {lo.item():.3g}, max {hi.item():.3g}")


def to_uint8(images: Tensor) -> Tensor:
    """(B, C, H, W) in [-1, 1] → (B, C, H, W) uint8 in [0, 255] on the CPU (clamped, rounded)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_grid(images: Tensor, nrow: int = 8) -> np.ndarray:
    """Images (B, C, H, W) in [-1, 1] → a uint8 grid (H', W', 3) for PNG files and W&B."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=2, normalize=False, pad_value=1.0)
    return ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def trainer_images(trainer: L.Trainer) -> ImageSource:
    """The training images of the trainer's datamodule by dataset index: (k,) → (k, C, H, W) in [-1, 1]."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "train_images"):
        raise TypeError("NeuroSQL needs a datamodule with a train_images(indices) method")
    return datamodule.train_images
