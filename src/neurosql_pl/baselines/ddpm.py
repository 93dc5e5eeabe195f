"""DDPM baseline (Ho et al. 2020): ε-prediction with a small U-Net, DDPM or DDIM sampling.

Forward process: q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), t = 0, …, T−1, ᾱ_t = Π_{s≤t}(1 − β_s),
with β from
  "linear": β_t evenly from 1e-4·(1000/T) to 0.02·(1000/T) (Ho et al.'s schedule, rescaled
            so that a short chain still ends near pure noise; Nichol & Dhariwal 2021);
  "cosine": ᾱ_t = f(t+1)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008 (Nichol &
            Dhariwal 2021); β clipped to ≤ 0.999.
Training: t ~ U{0, …, T−1}, ε ~ N(0, I), loss = ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² (mean
over pixels and batch; logged as train/loss).

Sampling, on a subsequence τ of `sample_steps` evenly spaced steps (all T when None):
  "ddpm": ancestral sampling. On the subsequence the chain's variances are β'_i =
          1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} (the respacing of Nichol & Dhariwal; with sample_steps = T it
          is exactly Ho et al.'s sampler), posterior variance β̃ = β'(1 − ᾱ_prev)/(1 − ᾱ).
  "ddim": DDIM (Song et al. 2021) with η = `ddim_eta` (0: deterministic).
The predicted x̂_0 is clipped to [-1, 1] at every step (`clip_denoised`), and the output is
clamped to [-1, 1].

EMA: with `ema_decay` > 0 the module keeps an exponential moving average of the denoiser's
weights (`ema_denoiser`, a `training_utils.WeightEMA` as NeuroSQL's, updated after every
optimiser step with a warm-up, in the checkpoint), and samples with it, as Ho et al. do
(they use 0.9999 over 800k steps; 0.999 suits a few thousand steps).
It is a copy of the same network, not extra capacity: the parameter budget counts `denoiser` only.

Budget matching (the comparison the paper calls "budget-matched"): `param_budget` picks the
denoiser's width: the largest whose parameter count is at most the budget (width 15, 231,361
parameters, against the budget 232,833 at 1×28×28; 26 at 3×32×32; 53 at 3×64×64). `param_budget: "dcgan:64:16"` (generator:width:latent_dim) means "the
parameter count of NeuroSQL's generator with those settings, built for this data's image
shape" (232,833 at 1×28×28); an integer is taken as it is; None keeps `width`. Epochs are
matched through the trainer piece (the same max_epochs for every model). Wall time is not
matched: a DDPM epoch costs more per parameter (a U-Net at full resolution) and sampling costs
`sample_steps` network passes per image; both are measured and reported.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..networks import build_generator
from ..training_utils import check_ema_decay, check_finite_loss, eval_mode
from .common import ImageModelBase
from .unet_denoiser import UNetDenoiser, count_parameters, width_for_budget

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


def beta_schedule(name: str, timesteps: int) -> torch.Tensor:
    """β_0..β_{T−1} (float64) of the "linear" or "cosine" schedule (see the module doc)."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if name == "linear":
        scale = 1000.0 / timesteps
        return torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), timesteps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def budget_parameters(param_budget: int | str, image_shape: tuple[int, int, int]) -> int:
    """A parameter budget: an integer, or "generator:width:latent_dim" (NeuroSQL's generator's count)."""
    if isinstance(param_budget, int):
        return param_budget
    try:
        name, width, latent_dim = str(param_budget).split(":")
        width_i, latent_i = int(width), int(latent_dim)
    except ValueError:
        raise ValueError(
            f"param_budget must be an integer or 'generator:width:latent_dim' (e.g. 'dcgan:64:16'), got {param_budget!r}"
        ) from None
    return count_parameters(build_generator(name, latent_i, image_shape, width_i))


class DDPM(ImageModelBase):
    """Denoising diffusion model with a small U-Net ε_θ; budget-matched by parameter count."""

    network_name = "denoiser"

    def __init__(
        self,
        width: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        param_budget: int | str | None = None,
        timesteps: int = 1000,
        schedule: str = "linear",
        sampler: str = "ddpm",
        sample_steps: int | None = None,
        ddim_eta: float = 0.0,
        clip_denoised: bool = True,
        ema_decay: float = 0.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        """
        Args:
            width: channels of the U-Net's first level (ignored when param_budget is set).
            channel_mults: channel multiplier per U-Net level; len − 1 stride-2 downsamplings,
                so the image size must be divisible by 2^(len − 1) (28 px: at most 3 levels).
            num_res_blocks: residual blocks per level on the way down (one more on the way up).
            param_budget: None (use `width`), an integer parameter count, or
                "generator:width:latent_dim" (e.g. "dcgan:64:16": NeuroSQL's generator's count
                at this image shape); width is then the largest one within it.
            timesteps: T, the length of the diffusion chain.
            schedule: "linear" or "cosine" β schedule.
            sampler: "ddpm" (ancestral) or "ddim".
            sample_steps: network passes per sample (≤ T, evenly spaced); None = T.
            ddim_eta: η of DDIM (0 = deterministic, 1 ≈ DDPM's variance).
            clip_denoised: clip the predicted x̂_0 to [-1, 1] at every sampling step.
            ema_decay: decay of the EMA of the denoiser's weights used for sampling (0 = no EMA).
            lr / betas: Adam settings.
            image_shape: (C, H, W); taken from the datamodule when None.
        """
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sample_steps is not None and not 1 <= sample_steps <= timesteps:
            raise ValueError(f"sample_steps must be in 1..timesteps={timesteps}, got {sample_steps}")
        if ddim_eta < 0:
            raise ValueError(f"ddim_eta must be >= 0, got {ddim_eta}")
        check_ema_decay(ema_decay)
        betas_t = beta_schedule(schedule, timesteps)
        self.save_hyperparameters()
        alpha_bar = torch.cumprod(1 - betas_t, dim=0)
        # float64 schedule, stored as float32 buffers (moved with the module, in the checkpoint)
        self.register_buffer("alpha_bar", alpha_bar.float())
        self.denoiser: UNetDenoiser | None = None
        if image_shape is not None:
            self._build_for(image_shape)

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        hp = self.hparams
        channels, size, size_w = image_shape
        if size != size_w:
            raise ValueError(f"square images expected, got image_shape={tuple(image_shape)}")
        width = hp.width
        if hp.param_budget is not None:
            budget = budget_parameters(hp.param_budget, image_shape)
            width = width_for_budget(budget, size, channels, tuple(hp.channel_mults), hp.num_res_blocks)
            hp.width = width  # the resolved width, for the record (rebuilding resolves it the same way)
        self.denoiser = UNetDenoiser(size, channels, width, tuple(hp.channel_mults), hp.num_res_blocks)
        self.build_ema()

    @property
    def timesteps(self) -> int:
        return int(self.hparams.timesteps)

    # ---------------------------------------------------------------- forward process and loss
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for time steps t (B,) in 0..T−1."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t)."""
        return self.denoiser(x_t, t)

    def diffusion_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """Mean ‖ε − ε_θ(x_t, t)‖² over pixels and batch, t ~ U{0..T−1}."""
        t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        return F.mse_loss(self.denoiser(self.q_sample(x0, t, noise), t), noise)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss = self.diffusion_loss(x)
        check_finite_loss(loss, self)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.denoiser.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    # ---------------------------------------------------------------- sampling
    def sampling_timesteps(self, steps: int | None = None) -> list[int]:
        """The evenly spaced subsequence τ (increasing, ends at T−1) of `steps` time steps."""
        steps = steps or self.hparams.sample_steps or self.timesteps
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sample_steps must be in 1..timesteps={self.timesteps}, got {steps}")
        if steps == 1:
            return [self.timesteps - 1]
        return torch.linspace(0, self.timesteps - 1, steps).round().long().unique().tolist()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """n new images (n, C, H, W) in [-1, 1] by `sampler` ("ddpm" | "ddim"; default: the
        module's) over `steps` network passes (default: sample_steps, else T)."""
        sampler = sampler or self.hparams.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        tau = self.sampling_timesteps(steps)
        eta = 1.0 if sampler == "ddpm" else float(self.hparams.ddim_eta)
        shape = (n, *self.hparams.image_shape)
        device = self.alpha_bar.device

        def randn() -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(device)

        x = randn()
        alpha_bar = self.alpha_bar.double()
        net = self.sampling_network()
        with eval_mode(net):
            for i in reversed(range(len(tau))):
                t = tau[i]
                a_t = alpha_bar[t]
                a_prev = alpha_bar[tau[i - 1]] if i > 0 else torch.ones((), dtype=torch.float64, device=device)
                eps = net(x, torch.full((n,), t, device=device, dtype=torch.long)).double()
                x0 = (x.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                if self.hparams.clip_denoised:
                    x0 = x0.clamp(-1, 1)
                    eps = (x.double() - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # the ε consistent with the clipped x̂_0
                # σ² = η² β̃ with β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev): η = 1 is DDPM's posterior
                var = eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
                mean = a_prev.sqrt() * x0 + (1 - a_prev - var).clamp(min=0).sqrt() * eps
                x = mean + var.sqrt() * randn().double() if i > 0 and eta > 0 else mean
                x = x.float()
        return x.clamp(-1, 1)
