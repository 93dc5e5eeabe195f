"""DCGAN baseline (Radford et al. 2016) with NeuroSQL's own generator.

Generator: `networks.build_generator(generator, latent_dim, image_shape, generator_width,
upsample)`, the SAME network NeuroSQL trains; with `ema_decay` > 0 `sample` uses an
exponential moving average of its weights (`training_utils.WeightEMA`, updated after every
generator step). Discriminator: `networks.DCGANEncoder` with one output (a logit): stride-2
4×4 convolutions with LeakyReLU(0.2), BatchNorm after all but the first (`disc_norm`),
optionally spectrally normalised (`spectral_norm`).

Training (manual optimisation, as Lightning 2.x needs for two optimisers): per batch, one
discriminator step, then one generator step on the same fakes, with the non-saturating loss
(Goodfellow et al. 2014):
    L_D = softplus(−D(x)) + softplus(D(G(z)))  [+ γ/2 · ‖∇_x D(x)‖²  when r1_gamma = γ > 0]
    L_G = softplus(−D(G(z)))
The R1 penalty (Mescheder et al. 2018) is on real images. Both players use Adam (lr, β = (0.5, 0.999)).
Logged: train/d_loss, train/g_loss, train/r1 (when on), and train/loss = d_loss + g_loss,
the sum of both players' objectives (a GAN has no single loss to minimise; it is reported for
completeness, the two parts are what to watch).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..networks import build_encoder, build_generator, check_generator_settings
from ..prior import sample_prior
from ..training_utils import check_ema_decay, check_finite_loss, eval_mode
from .common import ImageModelBase


class GAN(ImageModelBase):
    """DCGAN with NeuroSQL's generator; non-saturating loss, optional R1 and spectral norm."""

    network_name = "generator"

    def __init__(
        self,
        latent_dim: int = 16,
        generator: str = "dcgan",
        generator_width: int = 64,
        upsample: str = "transposed",
        disc_width: int | None = None,
        disc_norm: str = "batch",
        spectral_norm: bool = False,
        r1_gamma: float = 0.0,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        ema_decay: float = 0.0,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        """
        Args:
            latent_dim: d, the dimension of z ~ N(0, I_d) (as NeuroSQL's latent_dim).
            generator / generator_width / upsample: the generator, built exactly as NeuroSQL's.
            disc_width: width of the discriminator's first convolution (doubling at each
                stride-2 step); None = generator_width.
            disc_norm: "batch" (DCGAN) or "none" (usual with spectral_norm or R1).
            spectral_norm: spectrally normalise every discriminator layer.
            r1_gamma: γ ≥ 0 of the R1 penalty γ/2·E‖∇_x D(x)‖² on real images (0 = off).
            lr_g / lr_d / betas: Adam settings of the generator and of the discriminator.
            ema_decay: decay of the EMA of the generator's weights that `sample` uses (0 = off),
                as NeuroSQL's.
            image_shape: (C, H, W); taken from the datamodule when None.
        """
        super().__init__()
        check_generator_settings(generator, latent_dim, upsample)
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        if disc_norm not in ("batch", "none"):
            raise ValueError(f"disc_norm must be 'batch' or 'none', got {disc_norm!r}")
        check_ema_decay(ema_decay)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        if image_shape is not None:
            self._build_for(image_shape)

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        hp = self.hparams
        self.generator = build_generator(hp.generator, hp.latent_dim, image_shape, hp.generator_width, hp.upsample)
        self.build_ema()
        self.discriminator = build_encoder(
            image_shape, 1, hp.disc_width or hp.generator_width, norm=hp.disc_norm, spectral_norm=hp.spectral_norm
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, d) → images (B, C, H, W) in [-1, 1]."""
        return self.generator(z)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Non-saturating L_D (+ R1 on `real`) for a batch; fake is detached here."""
        gamma = self.hparams.r1_gamma
        if gamma > 0:
            real = real.detach().requires_grad_(True)
        real_logits = self.discriminator(real)
        loss = F.softplus(-real_logits).mean() + F.softplus(self.discriminator(fake.detach())).mean()
        terms = {}
        if gamma > 0:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.square().flatten(1).sum(1).mean()
            loss = loss + 0.5 * gamma * r1
            terms["r1"] = r1.detach()
        return {"loss": loss, **terms}

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating L_G = E softplus(−D(G(z)))."""
        return F.softplus(-self.discriminator(fake)).mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(x.shape[0], self.hparams.latent_dim, device=x.device)
        fake = self.generator(z)

        with self.toggled_optimizer(opt_d):  # discriminator step
            d_terms = self.discriminator_loss(x, fake)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_terms["loss"])
            opt_d.step()

        with self.toggled_optimizer(opt_g):  # generator step, against the updated discriminator
            g_loss = self.generator_loss(fake)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
        self.update_ema()  # manual optimisation: Lightning's optimizer_step hook does not run

        d_loss = d_terms["loss"].detach()
        total = d_loss + g_loss.detach()
        check_finite_loss(total, self)
        b = x.shape[0]
        self.log("train/loss", total, on_step=True, on_epoch=True, batch_size=b)
        self.log("train/d_loss", d_loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=b)
        if "r1" in d_terms:
            self.log("train/r1", d_terms["r1"], on_step=False, on_epoch=True, batch_size=b)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[generator's Adam, discriminator's Adam] — `self.optimizers()` returns them in this order."""
        hp = self.hparams
        return [
            torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=tuple(hp.betas)),
            torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=tuple(hp.betas)),
        ]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> torch.Tensor:
        """n new images G(z), z ~ N(0, I_d) (truncated at ``truncation``, see ``prior``): (n, C, H, W) in [-1, 1]
        (G: the EMA generator when ema_decay > 0)."""
        z = sample_prior(n, self.hparams.latent_dim, generator, truncation).to(self.device)
        net = self.sampling_network()
        with eval_mode(net):
            return net(z)
