"""Baselines trained under the same roof as NeuroSQL (same CLI, data, run outputs).

  VAE   encoder (mirror of the DCGAN generator) + NeuroSQL's generator as decoder; β-ELBO.
  GAN   NeuroSQL's generator + a DCGAN discriminator; non-saturating loss, optional R1 and
        spectral norm; manual optimisation.
  DDPM  a small U-Net ε_θ, linear/cosine β, DDPM or DDIM sampling; its width can be chosen so
        its parameter count matches NeuroSQL's generator (`param_budget`).

Each is a LightningModule that builds its networks at `setup` from the datamodule's
`image_shape`, trains on (image in [-1, 1], index) batches, logs train/loss, and has
`sample(n, generator=None) -> (n, C, H, W)` in [-1, 1]. Select one on the CLI with
`--config experiments/configs/model/{vae,gan,ddpm}.yaml` (`make train MODEL=vae`).
"""

from .common import count_parameters
from .ddpm import DDPM
from .gan import GAN
from .vae import VAE

__all__ = ["DDPM", "GAN", "VAE", "count_parameters"]
