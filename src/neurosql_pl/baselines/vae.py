"""VAE baseline (Kingma & Welling 2014) with NeuroSQL's own generator as its decoder.

Encoder: `networks.DCGANEncoder`, the mirror image of the DCGAN generator (stride-2
convolutions), ending in a linear layer to μ(x) and log σ²(x) ∈ R^d.
Decoder: `networks.build_generator(generator, latent_dim, image_shape, generator_width,
upsample)`, the SAME network NeuroSQL trains, so samples come from identical architectures.
With `ema_decay` > 0 an exponential moving average of the decoder's weights
(`training_utils.WeightEMA`, as NeuroSQL's) is what `sample` and the reconstructions decode
with; training uses the live decoder.

Loss per image (summed over pixels and latent dimensions, averaged over the batch): the
negative ELBO with a β-weighted KL term (β-VAE, Higgins et al. 2017; β = 1 is the ELBO),

    loss = recon(x, D(z)) + β · KL(N(μ, σ²) ‖ N(0, I)),  z = μ + σ·ε (one sample),

with `reconstruction`:
  "gaussian": −log N(x; D(z), s²I) up to its constant, i.e. Σ_pixels (x − D(z))² / (2 s²),
              s = `sigma` in the data's [-1, 1] units (an MSE scaled by 1/(2s²); s fixes how
              much the reconstruction weighs against the KL term);
  "bce":      the Bernoulli log-likelihood usual for MNIST (grey levels used as soft
              targets, no continuous-Bernoulli normaliser), on pixels mapped to [0, 1]: Σ −[p log q + (1−p) log(1−q)], p = (x+1)/2,
              q = (D(z)+1)/2 clamped to [1e-6, 1 − 1e-6] (the decoder ends in tanh).
Logged: train/loss, train/recon, train/kl (all per image).

Two kinds of reconstruction, named apart from NeuroSQL's:
  `reconstruct_images(x)`: D(μ(x)) for images x (B, C, H, W) in [-1, 1];
  `reconstruct(idx)`:      the same for the training images at dataset indices idx (B,),
                           taken from the trainer's datamodule, the signature NeuroSQL's
                           `reconstruct` has, so the run's reconstructions.png is written for
                           the VAE too. Given float images instead, it reconstructs them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..networks import build_encoder, build_generator, check_generator_settings
from ..prior import sample_prior
from ..training_utils import check_ema_decay, check_finite_loss, eval_mode
from .common import ImageModelBase

RECONSTRUCTIONS = ("gaussian", "bce")


class VAE(ImageModelBase):
    """Variational auto-encoder; decoder = NeuroSQL's generator."""

    network_name = "decoder"
    reconstructs_from = "images"

    def __init__(
        self,
        latent_dim: int = 16,
        generator: str = "dcgan",
        generator_width: int = 64,
        upsample: str = "transposed",
        encoder_width: int | None = None,
        encoder_norm: str = "batch",
        beta: float = 1.0,
        reconstruction: str = "bce",
        sigma: float = 0.5,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float = 0.0,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        """
        Args:
            latent_dim: d, the dimension of the codes (as NeuroSQL's latent_dim).
            generator / generator_width / upsample: the decoder, built exactly as NeuroSQL's generator.
            encoder_width: width of the encoder's first convolution (doubling at each stride-2
                step, mirroring the generator); None = generator_width.
            encoder_norm: "batch" (BatchNorm after every convolution but the first) or "none".
            beta: weight β ≥ 0 of the KL term (1 = the ELBO).
            reconstruction: "gaussian" (Σ (x − x̂)² / 2σ²) or "bce" (Bernoulli on (x+1)/2).
            sigma: the Gaussian decoder's fixed standard deviation, in [-1, 1] pixel units.
            lr / betas: Adam settings (encoder and decoder together).
            ema_decay: decay of the EMA of the decoder's weights that samples and
                reconstructions use (0 = off), as NeuroSQL's.
            image_shape: (C, H, W); taken from the datamodule when None.
        """
        super().__init__()
        check_generator_settings(generator, latent_dim, upsample)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        check_ema_decay(ema_decay)
        self.save_hyperparameters()
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        if image_shape is not None:
            self._build_for(image_shape)

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        hp = self.hparams
        self.decoder = build_generator(hp.generator, hp.latent_dim, image_shape, hp.generator_width, hp.upsample)
        self.build_ema()
        width = hp.encoder_width or hp.generator_width
        self.encoder = build_encoder(image_shape, 2 * hp.latent_dim, width, norm=hp.encoder_norm)

    # ---------------------------------------------------------------- the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) → μ (B, d), log σ² (B, d)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, d) → images (B, C, H, W) in [-1, 1]."""
        return self.decoder(z)

    def reconstruction_nll(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction term (B,), see the module doc."""
        if self.hparams.reconstruction == "gaussian":
            return (x_hat - x).square().flatten(1).sum(1) / (2 * self.hparams.sigma**2)
        q = ((x_hat + 1) / 2).clamp(1e-6, 1 - 1e-6)
        p = ((x + 1) / 2).clamp(0, 1)
        return F.binary_cross_entropy(q, p, reduction="none").flatten(1).sum(1)

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(μ, diag σ²) ‖ N(0, I)) per image (B,)."""
        return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Batch means of the reconstruction term, the KL term and loss = recon + β·KL."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device="cpu").to(mu) if generator is not None else torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        recon = self.reconstruction_nll(self.decoder(z), x).mean()
        kl = self.kl_divergence(mu, logvar).mean()
        return {"loss": recon + self.hparams.beta * kl, "recon": recon, "kl": kl}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, _ = batch
        terms = self.elbo_terms(x)
        check_finite_loss(terms["loss"], self)
        self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/recon", terms["recon"], on_step=False, on_epoch=True, batch_size=x.shape[0])
        self.log("train/kl", terms["kl"], on_step=False, on_epoch=True, batch_size=x.shape[0])
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    # ---------------------------------------------------------------- using the model
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> torch.Tensor:
        """n new images D(z), z ~ N(0, I_d) (truncated at ``truncation``, see ``prior``): (n, C, H, W) in [-1, 1]
        (D: the EMA decoder when ema_decay > 0)."""
        z = sample_prior(n, self.hparams.latent_dim, generator, truncation).to(self.device)
        decoder = self.sampling_network()
        with eval_mode(decoder):
            return decoder(z)

    @torch.no_grad()
    def reconstruct_images(self, x: torch.Tensor) -> torch.Tensor:
        """D(μ(x)) for images x (B, C, H, W) in [-1, 1]: (B, C, H, W) in [-1, 1] (D as in `sample`)."""
        decoder = self.sampling_network()
        with eval_mode(self.encoder, decoder):
            return decoder(self.encode(x.to(self.device))[0])

    @torch.no_grad()
    def reconstruct(self, idx_or_images: torch.Tensor) -> torch.Tensor:
        """D(μ(X_i)) for dataset indices (B,) of the trainer's training set, or for float images (B, C, H, W)."""
        if idx_or_images.is_floating_point():
            return self.reconstruct_images(idx_or_images)
        if not hasattr(self.datamodule, "train_images"):
            raise TypeError("reconstruct(indices) needs a trainer with a datamodule; use reconstruct_images(x)")
        return self.reconstruct_images(self.datamodule.train_images(idx_or_images.cpu()))

    @property
    def num_samples(self) -> int:
        """N, the trainer's number of training images (for reconstructions by index)."""
        if not hasattr(self.datamodule, "num_samples"):
            raise AttributeError("num_samples needs a trainer with a datamodule")
        return int(self.datamodule.num_samples)
