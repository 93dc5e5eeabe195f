"""The NeuroSQL LightningModule: a generator trained on per-sample codes Ẑ_i, no encoder.

Per training sample i (its dataset index) the module keeps, as checkpointed buffers:
  assignment[i] = π(i)  the lattice point sample i holds (π is a permutation of 0..N-1),
  latents[i]    = Ẑ_i   the code the generator is trained on (d floats);
and the lattice Q (N, d) itself. `training_step` minimises ℓ(X_i, G(Ẑ_i)) over minibatches;
the epoch-boundary `AssignmentCallback` (returned by `configure_callbacks`) updates π and Ẑ.
With `oversample` k > 1 the rows are codes, not images: the lattice has K = k·N points and
π, Ẑ have K rows, code v = i + r·N being copy r of image i (`oversampling.py`); each visit of
image i trains one of its codes, drawn at random. With `code_noise` σ > 0 the training step
feeds the generator Ẑ + σ·ε, ε ~ N(0, I) drawn afresh at every step.
During a fit the module owns the cost side of that step, an `AssignmentCosts` (the feature
banks, the block costs, the generated features recorded by the epoch: `cost_outputs`): the
callback takes it from `assignment_costs()` and hands the new π back to `apply_assignment`,
which makes the momentum update. New images come from z ~ N(0, I_d).

Two generators, with `ema_decay` > 0: `generator` is the live one, the one training and the
assignment use (the assignment must match what training optimises); `ema_generator` is an
exponential moving average of its weights (`training_utils.WeightEMA`, updated after every
optimiser step, in the checkpoint), and it is what `sample`, `reconstruct` and `interpolate`
draw from. With ema_decay = 0 (the default) there is only `generator`.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import nn

from .assignment import (
    BLOCK_STRATEGIES,
    SOLVERS,
    check_permutation,
    momentum_update,
    pca_assignment,
    random_assignment,
)
from .assignment_callback import AssignmentCallback
from .assignment_costs import BATCH, AssignmentCosts, check_cost_outputs
from .errors import CheckpointMismatchError, SettingError
from .generative_model import GenerativeModel
from .images import ImageSource, trainer_images
from .latent_dimension import LatentDim, check_latent_dim, resolve_latent_dim
from .lattice import load_or_build_lattice
from .losses import ReconstructionLoss
from .networks import build_generator, check_generator_settings
from .oversampling import check_oversample, draw_codes, resolve_oversample
from .prior import sample_prior
from .training_utils import check_ema_decay, check_finite_loss, eval_mode

LOSS_PREFIX = "loss_fn."  # state-dict keys of the frozen loss network, left out of checkpoints


class NeuroSQL(GenerativeModel):
    """NeuroSQL generative model.

    Shapes and sizes come from the datamodule at `setup` (N = its `num_samples`, images of its
    `image_shape` (C, H, W), values in [-1, 1]) unless given here (as when loading a checkpoint).
    The defaults are the configuration we recommend on a CPU, the one `make train` runs (its
    model piece, experiments/configs/model/neurosql.yaml, sets nothing else): pixel L1 loss, no
    perceptual term, multiscale blocks, OT-PCA initial π, costs from the epoch's own outputs,
    one lattice point per image (oversample=1) and no code noise (code_noise=0): those two
    levers are off until a measurement says they help.
    """

    network_name = "generator"
    reconstructs_from = "indices"  # reconstruct(idx) = G(Ẑ_i)

    def __init__(
        self,
        latent_dim: LatentDim = "auto",
        generator: str = "dcgan",
        generator_width: int = 64,
        upsample: str = "transposed",
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.5, 0.999),
        rho: float = 1.0,
        block_size: int = 256,
        solver: str = "exact",
        assign_every: int = 1,
        init: str = "pca",
        perceptual: str | None = None,
        perceptual_weight: float = 1.0,
        pixel: str | None = "l1",
        pixel_weight: float = 1.0,
        pretrained_backbone: bool = True,
        lattice_reference: str = "cube",
        lattice_method: str = "pot",
        lattice_cache_dir: str | None = None,
        feature_cache_gb: float = 6.0,
        cost_outputs: str = "epoch",
        ema_decay: float = 0.0,
        assign_sweeps: int = 1,
        block_strategy: str = "multiscale",
        oversample: int | Literal["auto"] = 1,
        code_noise: float = 0.0,
        seed: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int | None = None,
    ) -> None:
        """
        Args:
            latent_dim: d, the dimension of the codes and of the lattice: an integer ≥ 1, or "auto"
                (the default: 6 for N ≤ 5,000 training images, 16 above; see `latent_dimension.py`),
                resolved when N is known and recorded as the number.
            generator / generator_width: generator architecture (see `networks.py`) and width.
            upsample: how the generator doubles the resolution: "transposed" (stride-2
                transposed convolutions, as DCGAN) or "resize" (nearest ×2 then a 3×3
                convolution, no checkerboard artefacts); see `networks.py`.
            lr / betas: Adam settings of the generator.
            rho: momentum ρ ∈ (0, 1] of the code update Ẑ ← ρ·Q_π + (1−ρ)·Ẑ (1 = jump to Q_π).
            block_size: m, the local assignment size (2 ≤ m; m ≥ N means one global assignment:
                a folder of fewer than m images trains as it is).
            solver: one of `assignment.SOLVERS`: "exact" (scipy), "pot" (ot.emd) or "greedy".
            assign_every: run the assignment step every this many epochs (≥ 1).
            init: initial π, "random" or "pca" (OT of the images' whitened PCA scores to the lattice).
            perceptual / perceptual_weight / pixel / pixel_weight / pretrained_backbone: the loss ℓ
                (see `losses.ReconstructionLoss`).
            lattice_reference / lattice_method / lattice_cache_dir: how the lattice is built
                (see `lattice.py`); it is cached on disk by (N, d, reference, method, seed).
            feature_cache_gb: memory (GiB) for each in-memory feature bank: the real images'
                loss features [F, ψ] (computed once per fit, used by training and assignment) and,
                with cost_outputs="epoch", the generated ones (see `feature_bank.py`); 0 disables them.
            cost_outputs: where the assignment's G(Q_k) come from: "fresh" (generator and loss
                network passes at the epoch end) or "epoch" (the loss features recorded by the
                training steps of the epoch, for every pixel term; needs rho=1). Either way the
                cost is the training loss ℓ itself: a GEMM for its squared part, exact pairwise
                L1 for its L1 part (pixel "l1" / "laplacian_l1").
            ema_decay: decay d ∈ [0, 1) of an exponential moving average of the generator's
                weights (and BatchNorm statistics), updated after every optimiser step with a
                warm-up (see `training_utils.WeightEMA`); 0 = off, typically 0.999. `sample`,
                `reconstruct` and `interpolate` use the averaged generator; training and the
                assignment keep the live one. It is saved in checkpoints; a checkpoint without
                one starts it from the checkpoint's generator weights.
            assign_sweeps: block sweeps per assignment step (≥ 1): each draws new blocks and
                re-solves them on the same costs, so the total assigned cost can only go down. With
                feature banks the generated features are computed once per step (GEMMs and LSAPs per
                sweep); without them every sweep makes fresh generator and loss passes.
            block_strategy: the blocks of each sweep: "random"; "neighbours", samples whose images
                are alike (`assignment.neighbour_blocks`, from the loss's features or pooled pixels);
                or "multiscale": first images and lattice points bisected together into N/m
                matched (group, cell) pairs, each solved exactly (`assignment.multiscale_blocks`),
                kept only when its total cost beats the first neighbour sweep's (which the step also
                runs), then neighbour sweeps (see `AssignmentCallback`).
            oversample: k, lattice points per image: an integer ≥ 1, or "auto" (the least k with
                k·N ≥ 10,000, at most 100; 1 for N ≥ 10,000; see `oversampling.py`). The lattice
                then has K = k·N points, π and Ẑ have K rows (code v = i + r·N is copy r of image
                i), and every assignment block is a capacity-k assignment: each lattice point is
                held by exactly one code, each image by exactly k. Each training visit of image
                i trains one of its k codes, copy r drawn uniformly (torch's global random state),
                so over the epochs the generator trains on all K codes. `reconstruct(i)` and
                `interpolate` use copy 0 (code i). 1 (the default) is the method as stated.
            code_noise: σ ≥ 0: training feeds the generator Ẑ_v + σ·ε with ε ~ N(0, I_d) drawn
                afresh at every step (as a VAE's posterior noise); Ẑ itself, the assignment's
                costs G(Q_k) and `reconstruct` stay noise-free. σ > 0 needs cost_outputs="fresh"
                (training's outputs are no longer G(Q_π)). 0 (the default) is the method as stated.
            seed: seeds the lattice, the initial π and the assignment blocks.
            image_shape / num_samples: (C, H, W) and N; filled from the datamodule when None.
        """
        super().__init__()
        check_latent_dim(latent_dim)
        check_generator_settings(generator, resolve_latent_dim(latent_dim, 1), upsample)
        check_ema_decay(ema_decay)
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if block_size < 2:
            raise ValueError(f"block_size (m) must be >= 2, got {block_size}")
        if assign_every < 1:
            raise ValueError(f"assign_every must be >= 1, got {assign_every}")
        if init not in ("random", "pca"):
            raise ValueError(f"init must be 'random' or 'pca', got {init!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if assign_sweeps < 1:
            raise ValueError(f"assign_sweeps must be >= 1, got {assign_sweeps}")
        if block_strategy not in BLOCK_STRATEGIES:
            raise ValueError(f"block_strategy must be one of {BLOCK_STRATEGIES}, got {block_strategy!r}")
        check_oversample(oversample)
        if not (code_noise >= 0.0 and math.isfinite(code_noise)):
            raise ValueError(f"code_noise must be a finite σ >= 0, got {code_noise}")
        check_cost_outputs(cost_outputs, rho, code_noise)
        self.save_hyperparameters()
        self.loss_fn = ReconstructionLoss(
            perceptual=perceptual,
            perceptual_weight=perceptual_weight,
            pixel=pixel,
            pixel_weight=pixel_weight,
            pretrained_backbone=pretrained_backbone,
        )
        self.generator: nn.Module | None = None  # its EMA, ema_generator, comes with it (GenerativeModel.build_ema)
        width = 0 if latent_dim == "auto" else latent_dim  # (K, d), sized by `_build`
        self.register_buffer("lattice", torch.empty(0, width))
        self.register_buffer("assignment", torch.empty(0, dtype=torch.long))
        self.register_buffer("latents", torch.empty(0, width))
        self.register_buffer("initialized", torch.tensor(False))
        # Under DDP every rank updates these identically at epoch ends: never re-broadcast them.
        self._ddp_params_and_buffers_to_ignore = ["lattice", "assignment", "latents", "initialized"]
        self._costs: AssignmentCosts | None = None  # the assignment's cost side, during a fit
        if image_shape is not None and num_samples is not None:
            self._build(tuple(image_shape), int(num_samples))

    # ---------------------------------------------------------------- construction
    def _build(self, image_shape: tuple[int, int, int], num_samples: int) -> None:
        """Create the generator and the (K, d) per-code buffers, K = k·N (values set in
        `on_fit_start`); the hyper-parameters record N and the resolved k and d."""
        if num_samples < 2:
            raise SettingError(f"NeuroSQL needs at least 2 training samples, got {num_samples}")
        hp = self.hparams
        d = resolve_latent_dim(hp.latent_dim, num_samples)
        k = resolve_oversample(hp.oversample, num_samples)
        self.generator = build_generator(hp.generator, d, image_shape, hp.generator_width, hp.upsample)
        self.build_ema()
        self.lattice = torch.zeros(k * num_samples, d)
        self.assignment = torch.arange(k * num_samples)
        self.latents = torch.zeros(k * num_samples, d)
        self.hparams.image_shape = tuple(image_shape)
        self.hparams.num_samples = num_samples
        self.hparams.oversample = k
        self.hparams.latent_dim = d

    @property
    def num_samples(self) -> int:
        """N, the training images the model holds codes for (0 before it is built)."""
        return int(self.hparams.num_samples or 0)

    @property
    def codes_per_image(self) -> int:
        """k, the lattice points (codes) each image holds: `oversample`, resolved from N."""
        return resolve_oversample(self.hparams.oversample, self.num_samples) if self.num_samples else 1

    @property
    def num_codes(self) -> int:
        """K = k·N: the lattice points, and the rows of π and Ẑ."""
        return int(self.assignment.shape[0])

    def setup(self, stage: str) -> None:
        """Take N and the image shape from the datamodule; check them against a built model."""
        datamodule = self.datamodule
        if datamodule is None or not hasattr(datamodule, "num_samples"):
            if self.generator is None:
                raise RuntimeError("NeuroSQL needs a datamodule with `num_samples` and `image_shape` (or both given)")
            return
        shape, n = tuple(datamodule.image_shape), int(datamodule.num_samples)
        if self.generator is None:
            self._build(shape, n)
        elif (shape, n) != (tuple(self.hparams.image_shape), self.num_samples):
            raise CheckpointMismatchError(
                f"the model was built for N={self.num_samples} images of shape {tuple(self.hparams.image_shape)}, "
                f"but the data has N={n} images of shape {shape}; use the same data (and subset) as the checkpoint"
            )

    def on_fit_start(self) -> None:
        """Build the lattice and the initial π, Ẑ = Q_π — unless restored from a checkpoint."""
        if bool(self.initialized):
            return
        hp = self.hparams
        n = self.num_codes
        cache = Path(hp.lattice_cache_dir) if hp.lattice_cache_dir else None
        lattice = load_or_build_lattice(n, hp.latent_dim, hp.lattice_reference, hp.lattice_method, hp.seed, cache)
        generator = torch.Generator().manual_seed(hp.seed)
        if hp.init == "pca":
            images = trainer_images(self.trainer)
            pi = pca_assignment(images, lattice, generator, block_size=hp.block_size, num_images=self.num_samples)
        else:
            pi = random_assignment(n, generator)
        # broadcast from rank 0 so every process starts from identical state
        lattice, pi = self.trainer.strategy.broadcast((lattice, pi), src=0)
        device = self.assignment.device
        self.lattice = lattice.to(device)
        self.assignment = pi.to(device)
        self.latents = self.lattice[self.assignment].clone()
        self.initialized.fill_(True)

    def on_train_start(self) -> None:
        self.build_assignment_costs(trainer_images(self.trainer))

    def on_train_end(self) -> None:
        self._costs = None  # per-fit memory (up to 2 × feature_cache_gb)

    def build_assignment_costs(self, images_at: ImageSource) -> AssignmentCosts:
        """The cost side of this fit's assignment steps and of its training loss (`on_train_start`
        builds it): the real-image features are computed now, on the lattice as it is now; G(Q_k)
        comes from the live generator at each call. images_at(indices) gives the training images
        in [-1, 1] (`images.trainer_images` in a fit)."""
        self._costs = None  # the old banks go before the new ones are filled
        hp = self.hparams
        self._costs = AssignmentCosts(
            self.loss_fn, self.lattice, self._generate, images_at, tuple(hp.image_shape), hp.cost_outputs,
            hp.feature_cache_gb, self.device, num_images=self.num_samples,
        )
        return self._costs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """RNG states in; the frozen loss network's weights out (rebuilt from its name on load)."""
        checkpoint["rng_states"] = rng_states()
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(LOSS_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Allocate buffers of the checkpoint's sizes before its state dict is loaded; restore RNGs;
        fit its EMA weights to this model's ema_decay (`training_utils.match_ema_state`)."""
        if "rng_states" in checkpoint and self._trainer is not None:
            set_rng_states(checkpoint["rng_states"])
        state = checkpoint["state_dict"]
        for key, value in self.loss_fn.state_dict(prefix=LOSS_PREFIX).items():
            state.setdefault(key, value)  # not stored (see on_save_checkpoint): this model's own frozen copy
        codes, d = state["latents"].shape
        if self.generator is None and self.hparams.latent_dim == "auto":
            self.hparams.latent_dim = d  # not built yet: the checkpoint's d is the one
        if d != self.hparams.latent_dim:
            raise CheckpointMismatchError(
                f"checkpoint has latent_dim={d} but this model has latent_dim={self.hparams.latent_dim}; "
                f"resume with --model.latent_dim {d}"
            )
        hyper = checkpoint.get("hyper_parameters", {})
        n = int(hyper.get("num_samples") or codes)  # N images; K = codes = k·N
        k = codes // n
        shape = tuple(hyper.get("image_shape") or ())
        if self.generator is None and shape:
            self._build(shape, n)
        elif shape and shape != tuple(self.hparams.image_shape):
            raise CheckpointMismatchError(
                f"checkpoint was trained on images of shape {shape} but the data has {tuple(self.hparams.image_shape)}; "
                "resume with the same dataset settings (image_size, channels) as the checkpoint"
            )
        if self.generator is not None and self.num_samples != n:
            raise CheckpointMismatchError(
                f"checkpoint holds per-sample state for N={n} images but the data has N={self.num_samples}; "
                "resume with the same dataset and subset as the checkpoint"
            )
        if self.generator is not None and self.num_codes != codes:
            raise CheckpointMismatchError(
                f"checkpoint holds {k} codes per image (K={codes} for N={n}) but this model holds {self.codes_per_image} "
                f"(oversample={self.hparams.oversample}); resume with --model.oversample {k}"
            )
        super().on_load_checkpoint(checkpoint)

    # ---------------------------------------------------------------- training
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, d) → images (B, C, H, W) in [-1, 1] by the live generator (the one trained)."""
        return self.generator(z)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """batch = (images (B, C, H, W) in [-1, 1], dataset indices i (B,)) → mean ℓ(X_i, G(Ẑ_v + σ·ε)):
        v = i, or with k codes per image one of them drawn at random (`oversampling.draw_codes`);
        ε ~ N(0, I_d) drawn afresh when code_noise σ > 0."""
        x, idx = batch
        codes = draw_codes(idx, self.codes_per_image, self.num_samples)
        z = self.latents[codes]
        if self.hparams.code_noise > 0:
            z = z + self.hparams.code_noise * torch.randn_like(z)
        fake = self.generator(z)
        loss = self._costs.loss(fake, x, idx, self.assignment[codes]).mean()
        check_finite_loss(loss, self, remedy="lower --model.lr")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        return [
            AssignmentCallback(
                block_size=hp.block_size,
                solver=hp.solver,
                every_n_epochs=hp.assign_every,
                seed=hp.seed,
                sweeps=hp.assign_sweeps,
                strategy=hp.block_strategy,
            )
        ]

    # ---------------------------------------------------------------- the assignment step
    def assignment_costs(self) -> AssignmentCosts:
        """The cost side of this fit's assignment step (`AssignmentCosts`: its block costs are
        ℓ(X_i, G(Q_k)) by the live generator). Under DDP every rank first takes rank 0's
        generator buffers (BatchNorm statistics, which DDP re-broadcasts only at the next forward
        pass), so that all ranks score their blocks with the same eval-mode generator."""
        if self._costs is None:
            raise RuntimeError("the assignment costs exist during a fit, or after build_assignment_costs(images_at)")
        if self._trainer is not None and self.trainer.world_size > 1:
            for buffer in self.generator.buffers():
                torch.distributed.broadcast(buffer, src=0)
        return self._costs

    def apply_assignment(self, assignment: torch.Tensor) -> None:
        """Take the new π (K,) of an assignment step: π ← assignment, Ẑ ← ρ·Q_π + (1 − ρ)·Ẑ."""
        check_permutation(assignment, self.num_codes)
        self.assignment = assignment.to(self.assignment.device)
        self.latents = momentum_update(self.latents, self.lattice, self.assignment, self.hparams.rho)

    # ---------------------------------------------------------------- using the model
    # sample, reconstruct and interpolate use the EMA generator when there is one (ema_decay > 0)
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> torch.Tensor:
        """n new images G(z) from z ~ N(0, I_d) (``truncation`` t: components redrawn until
        |z_j| ≤ t, see ``prior.sample_prior``): (n, C, H, W) in [-1, 1]."""
        z = sample_prior(n, self.hparams.latent_dim, generator, truncation).to(self.device)
        return self._generate(z, self.sampling_generator)

    @torch.no_grad()
    def reconstruct(self, idx: torch.Tensor) -> torch.Tensor:
        """G(Ẑ_i) for dataset indices idx (B,) in [0, N): (B, C, H, W) in [-1, 1]. With k codes per
        image, Ẑ_i is image i's copy 0 (code i)."""
        return self._generate(self.latents[idx.to(self.latents.device)], self.sampling_generator)

    @torch.no_grad()
    def interpolate(self, a: int, b: int, steps: int = 8) -> torch.Tensor:
        """Images along the straight line from Ẑ_a to Ẑ_b (endpoints included; codes a and b, i.e.
        copy 0 of images a and b): (steps, C, H, W)."""
        t = torch.linspace(0, 1, steps, device=self.latents.device)[:, None]
        return self._generate((1 - t) * self.latents[a] + t * self.latents[b], self.sampling_generator)

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator `sample`, `reconstruct` and `interpolate` use: the EMA's when ema_decay > 0."""
        return self.sampling_network()

    def _generate(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """net(z) for codes (B, d), BATCH at a time, in eval mode; net = the live generator by
        default (the assignment's G(Q_k))."""
        net = self.generator if net is None else net
        with eval_mode(net):
            return torch.cat([net(chunk) for chunk in z.split(BATCH)])


def rng_states() -> dict[str, Any]:
    """The global random states (Python, NumPy, torch CPU and CUDA) for exact resumption."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    # only tensors and plain Python values, so that weights-only checkpoint loading accepts them
    states: dict[str, Any] = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
