"""NeuroSQL's latent dimension d: a number, or "auto", chosen from the training set's size N.

"auto" (`resolve_latent_dim`) gives d = SMALL_D (6) for N ≤ SMALL_N (5,000) and d = LARGE_D
(16) above. That is what won (docs/results.md, "Few training images"):
  - `make fewshot` on MNIST (128,000 images seen per run, FID and KID from 1,000 samples): d = 6
    had the lowest FID and KID of every NeuroSQL setting, the VAE and the GAN at N = 1,000 (2
    seeds: 53.9 against the GAN's 61.9 and d = 16's 101) and at N = 5,000 (43.5 against d = 16's
    58.6 and the VAE's 69.1), and was the better d at N = 500 and at N = 100 (where it copies
    more: memorisation ratio 0.64 against d = 16's 0.74);
  - `make ablate` on Emoji3D (3,052 colour 64 px images, 30 min, 2 seeds): FID 209 against
    d = 16's 230;
  - on all 60,000 MNIST images d = 16 is the measured default.
With few codes a small d makes the lattice dense, so that z ~ N(0, I) lands near codes the
generator was trained on.

The model resolves "auto" once it knows N (`NeuroSQL.setup`, from the datamodule) and records
the number in its hyper-parameters, so checkpoints, `hparams.yaml` and sampling see d itself.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LARGE_D", "SMALL_D", "SMALL_N", "LatentDim", "check_latent_dim", "resolve_latent_dim"]

#: the setting: d ≥ 1, or "auto" (chosen from N)
LatentDim = int | Literal["auto"]
SMALL_N = 5_000  # "auto": up to this many training images ...
SMALL_D = 6  # ... d is this,
LARGE_D = 16  # and above it this


def check_latent_dim(latent_dim: object) -> None:
    """Raise ValueError unless `latent_dim` is an int ≥ 1 or "auto"."""
    if latent_dim == "auto":
        return
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an integer >= 1 or 'auto', got {latent_dim!r}")


def resolve_latent_dim(latent_dim: LatentDim, num_images: int) -> int:
    """d for N = num_images: the integer itself, or for "auto" SMALL_D when N ≤ SMALL_N, else LARGE_D."""
    check_latent_dim(latent_dim)
    if latent_dim == "auto":
        return SMALL_D if num_images <= SMALL_N else LARGE_D
    return int(latent_dim)
