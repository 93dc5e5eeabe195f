"""The baselines (VAE, DCGAN, DDPM) train from the same CLI as NeuroSQL and write the same run outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers.cli_args import CONFIGS, baseline_fit_args
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import lightning as L
from neurosql_pl import NeuroSQL
from neurosql_pl.baselines import DDPM, GAN, VAE, count_parameters
from neurosql_pl.baselines.ddpm import beta_schedule
from neurosql_pl.cli import main
from neurosql_pl.networks import build_encoder, build_generator
from neurosql_pl.run_folder import train_metrics

CLASSES = {"vae": VAE, "gan": GAN, "ddpm": DDPM}
EXTRA = {  # CLI overrides on top of the tiny networks: the VAE and GAN with an EMA, the VAE with resize upsampling
    "vae": ["--model.ema_decay", "0.9", "--model.upsample", "resize"],
    "gan": ["--model.ema_decay", "0.9"],
    "ddpm": [],
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks gain nothing from a second thread, and on a shared 2-core machine two
    OpenMP threads that wait for each other make each small op ~100× slower when another
    process holds a core (measured: 3 DDPM steps 0.12 s with one thread, 12.8 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(name: str, image_shape: tuple[int, int, int], **kwargs) -> L.LightningModule:
    if name == "ddpm":
        kwargs = {"width": 8, "timesteps": 20, "sample_steps": 4, **kwargs}
    else:
        kwargs = {"generator_width": 8, "latent_dim": 4, **kwargs}
    return CLASSES[name](image_shape=image_shape, **kwargs)


def fit_steps(model: L.LightningModule, x: torch.Tensor, steps: int, batch_size: int = 8) -> L.Trainer:
    """Fit `steps` optimisation steps on images x without a datamodule (the model is built)."""
    loader = DataLoader(TensorDataset(x, torch.arange(len(x))), batch_size=batch_size, shuffle=False)
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )
    trainer.fit(model, loader)
    return trainer


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_one_epoch_cli_fit_writes_run_outputs_and_the_checkpoint_round_trips(name: str, tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(baseline_fit_args(name, tiny_mnist, run, *EXTRA[name]))
    ckpt_path = run / "checkpoints" / "last.ckpt"
    assert ckpt_path.is_file()
    assert Image.open(run / "samples.png").size == (8 * 30 + 2, 8 * 30 + 2)  # 8×8 grid of 28 px
    assert (run / "reconstructions.png").is_file() == (name == "vae")  # only the VAE reconstructs
    metrics = train_metrics(run)
    assert metrics["epochs"] == 1 and metrics["train_loss"] is not None and metrics["train_loss"] == metrics["train_loss"]

    ckpt = torch.load(ckpt_path, weights_only=False)
    assert tuple(ckpt["hyper_parameters"]["image_shape"]) == (1, 28, 28)
    model = CLASSES[name].load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)  # plain tensors and values
    restored = model.state_dict()
    assert restored.keys() == ckpt["state_dict"].keys()
    assert any(key.startswith("ema_") and key.endswith(".n_averaged") for key in restored)  # all three keep an EMA here
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(restored[key], value), key
    out = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 28, 28) and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_baseline_config_parses_with_overrides(name: str, tmp_path: Path) -> None:
    cli = main(
        ["--config", str(CONFIGS / "trainer" / "default.yaml"), "--config", str(CONFIGS / "model" / f"{name}.yaml"),
         "--config", str(CONFIGS / "data" / "mnist.yaml"), "--model.lr" + ("_g" if name == "gan" else ""), "0.0005",
         "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    assert isinstance(cli.model, CLASSES[name])
    assert cli.model.hparams.get("lr", cli.model.hparams.get("lr_g")) == 0.0005


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_sample_shape_and_range(name: str, shape: tuple[int, int, int]) -> None:
    model = tiny_model(name, shape)
    with torch.no_grad():  # large weights: outputs must still be clamped / squashed into [-1, 1]
        for p in model.parameters():
            p.mul_(3.0)
    model.train()
    out = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (5, *shape)
    assert out.min() >= -1 and out.max() <= 1
    assert model.training  # sample() restores the training mode


@pytest.mark.parametrize("upsample, parameters", [("transposed", 232_833), ("resize", 175_041)])
def test_baselines_share_neurosqls_generator(upsample: str, parameters: int) -> None:
    shape = (1, 28, 28)
    reference = build_generator("dcgan", 16, shape, 64, upsample=upsample)
    # d = 16 as the baselines' configs (NeuroSQL's default "auto" would give 6 for N = 2 images)
    neurosql = NeuroSQL(latent_dim=16, upsample=upsample, image_shape=shape, num_samples=2, perceptual=None, block_size=2)
    for net in (neurosql.generator, VAE(image_shape=shape, upsample=upsample).decoder, GAN(image_shape=shape, upsample=upsample).generator):
        assert type(net) is type(reference)
        assert [(n, p.shape) for n, p in net.named_parameters()] == [(n, p.shape) for n, p in reference.named_parameters()]
    assert count_parameters(reference) == parameters


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_vae_and_gan_sample_with_an_ema_updated_after_every_generator_step(name: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(name, (1, 28, 28), ema_decay=0.9)
    live = model.decoder if name == "vae" else model.generator
    ema = model.ema_decoder if name == "vae" else model.ema_generator
    trainer = fit_steps(model, torch.rand(16, 1, 28, 28) * 2 - 1, steps=4)  # the GAN: 2 steps per batch
    generator_steps = 4 if name == "vae" else 2
    assert trainer.global_step == 4 and int(ema.n_averaged) == 1 + generator_steps
    assert not any(p.requires_grad for p in ema.parameters())
    assert not torch.equal(ema.module.project[0].weight, live.project[0].weight)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ema.module(z)  # the EMA copy is always in eval mode
    assert torch.equal(model.sample(3, generator=torch.Generator().manual_seed(0)), expected)
    if name == "vae":  # reconstructions decode with the same (EMA) decoder as samples
        x = torch.rand(2, 1, 28, 28) * 2 - 1
        with torch.no_grad():
            assert torch.equal(model.reconstruct_images(x), ema.module(model.eval().encode(x)[0]))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_encoder_mirrors_the_generator(shape: tuple[int, int, int]) -> None:
    encoder = build_encoder(shape, out_features=6, width=8)
    assert encoder(torch.randn(2, *shape)).shape == (2, 6)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    steps = {28: 2, 32: 3, 64: 4}[shape[1]]  # as many stride-2 steps as the generator's upsamplings
    assert [c.out_channels for c in convs] == [8 * 2**k for k in range(steps)]
    sn = build_encoder(shape, out_features=1, width=8, norm="none", spectral_norm=True)
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in sn.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in sn.modules())
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        build_encoder((1, 28, 28), 1, 8)(torch.randn(2, 1, 32, 32))


def test_ddpm_param_budget_matches_the_generator() -> None:
    model = DDPM(param_budget="dcgan:64:16", image_shape=(1, 28, 28))
    n = count_parameters(model.denoiser)
    assert 0.95 * 232_833 <= n <= 232_833
    assert model.hparams.width == 15
    assert count_parameters(DDPM(param_budget=100_000, image_shape=(1, 28, 28)).denoiser) <= 100_000


@pytest.mark.parametrize("r1_gamma, spectral_norm, disc_norm", [(0.0, False, "batch"), (10.0, True, "none")])
def test_gan_alternates_two_optimisers(r1_gamma: float, spectral_norm: bool, disc_norm: str) -> None:
    torch.manual_seed(0)
    model = tiny_model("gan", (1, 28, 28), r1_gamma=r1_gamma, spectral_norm=spectral_norm, disc_norm=disc_norm)
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = fit_steps(model, torch.rand(8, 1, 28, 28) * 2 - 1, steps=2)  # manual optimisation: 2 steps = 1 batch

    assert not model.automatic_optimization
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()) if a.ndim > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()) if a.ndim > 1)
    opt_g, opt_d = (o for o in trainer.optimizers)
    assert {id(p) for g in opt_g.param_groups for p in g["params"]} == {id(p) for p in model.generator.parameters()}
    assert {id(p) for g in opt_d.param_groups for p in g["params"]} == {id(p) for p in model.discriminator.parameters()}
    for opt in (opt_g, opt_d):  # each took exactly one Adam step
        assert all(float(s["step"]) == 1 for s in opt.state.values())
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/d_loss", "train/g_loss") + (("train/r1",) if r1_gamma else ()):
        assert torch.isfinite(logged[key]), key


def test_vae_elbo_terms_are_finite_and_beta_scales_the_kl_term() -> None:
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for reconstruction in ("gaussian", "bce"):
        model = tiny_model("vae", (1, 28, 28), reconstruction=reconstruction)
        terms = {}
        for beta in (1.0, 3.0):
            model.hparams.beta = beta
            terms[beta] = model.elbo_terms(x, generator=torch.Generator().manual_seed(0))
        for t in terms.values():
            assert all(torch.isfinite(v) for v in t.values())
            assert t["recon"] > 0 and t["kl"] >= 0
        assert torch.allclose(terms[1.0]["recon"], terms[3.0]["recon"]) and torch.allclose(terms[1.0]["kl"], terms[3.0]["kl"])
        for beta, t in terms.items():
            assert torch.allclose(t["loss"], t["recon"] + beta * t["kl"])
    # closed-form KL: zero at the prior, ½(μ² + σ² − 1 − log σ²) summed over dimensions otherwise
    assert VAE.kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0
    kl = VAE.kl_divergence(torch.full((1, 2), 2.0), torch.full((1, 2), float(torch.tensor(4.0).log())))
    assert torch.allclose(kl, torch.tensor([2 * 0.5 * (4 + 4 - 1 - float(torch.tensor(4.0).log()))]))


def test_vae_reconstructs_images_and_indices(tiny_mnist: Path) -> None:
    model = tiny_model("vae", (1, 28, 28))
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    rec = model.reconstruct_images(x)
    assert rec.shape == x.shape and rec.min() >= -1 and rec.max() <= 1
    assert torch.equal(model.reconstruct(x), rec)
    with pytest.raises(TypeError, match="reconstruct_images"):
        model.reconstruct(torch.arange(3))  # indices need a trainer's datamodule


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_forward_noising_endpoints(schedule: str) -> None:
    model = DDPM(width=8, timesteps=1000, schedule=schedule, image_shape=(1, 28, 28))
    torch.manual_seed(0)
    x0 = torch.rand(64, 1, 28, 28) * 2 - 1
    n = len(x0)
    start = model.q_sample(x0, torch.zeros(n, dtype=torch.long))
    assert (start - x0).abs().mean() < 0.02  # t = 0: x almost unchanged
    end = model.q_sample(x0, torch.full((n,), 999, dtype=torch.long))
    assert abs(float(end.mean())) < 0.02 and abs(float(end.std()) - 1) < 0.02  # t = T: ≈ N(0, 1)
    corr = torch.corrcoef(torch.stack([end.flatten(), x0.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.02  # and independent of x_0
    betas = beta_schedule(schedule, 1000)
    assert betas.min() > 0 and betas.max() < 1 and model.alpha_bar.diff().max() < 0  # ᾱ decreases


def test_ddpm_and_ddim_samplers_produce_in_range_images() -> None:
    model = DDPM(width=8, timesteps=50, image_shape=(1, 28, 28))
    seed = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ddpm = model.sample(4, generator=seed(), sampler="ddpm", steps=10)
    ddim = model.sample(4, generator=seed(), sampler="ddim", steps=10)
    full = model.sample(2, generator=seed(), sampler="ddpm")  # all T steps (ancestral, Ho et al.)
    for out in (ddpm, ddim, full):
        assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    assert ddpm.shape == ddim.shape == (4, 1, 28, 28) and full.shape == (2, 1, 28, 28)
    assert torch.equal(ddim, model.sample(4, generator=seed(), sampler="ddim", steps=10))  # η = 0: deterministic
    assert not torch.equal(ddpm, ddim)
    assert model.sampling_timesteps(10)[-1] == 49 and len(model.sampling_timesteps(10)) == 10
    assert model.sampling_timesteps(1) == [49] and model.sampling_timesteps(50) == list(range(50))
    with pytest.raises(ValueError, match="sampler"):
        model.sample(1, sampler="euler")


def test_ddpm_training_lowers_the_loss_and_keeps_an_ema(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DDPM(width=8, timesteps=20, lr=3e-3, ema_decay=0.9, image_shape=(1, 28, 28))
    x = (torch.rand(8, 1, 28, 28) > 0.7).float() * 2 - 1
    initial = [p.detach().clone() for p in model.denoiser.parameters()]

    def loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return float(model.diffusion_loss(x))

    before = loss()
    trainer = fit_steps(model, x, steps=30)
    assert loss() < before
    # the EMA copy moved away from the initial weights but lags the trained ones; it is what samples
    ema = list(model.ema_denoiser.parameters())
    assert all(not e.requires_grad for e in ema)
    assert any(not torch.equal(e, p0) for e, p0 in zip(ema, initial))
    assert any(not torch.equal(e, p) for e, p in zip(ema, model.denoiser.parameters()))
    # one update after each optimiser step, its warm-up counted in steps: the same d_k as before
    # the shared WeightEMA (k = global_step), so the averages are unchanged
    assert int(model.ema_denoiser.n_averaged) == trainer.global_step + 1 == 31
    with_ema = model.sample(2, generator=torch.Generator().manual_seed(0))

    # a checkpoint in the layout before WeightEMA (ema_denoiser.<key>, no n_averaged) still loads
    path = tmp_path / "ddpm.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["state_dict"]
    del state["ema_denoiser.n_averaged"]
    for key in [k for k in state if k.startswith("ema_denoiser.module.")]:
        state[key.replace("ema_denoiser.module.", "ema_denoiser.")] = state.pop(key)
    torch.save(ckpt, path)
    old = DDPM.load_from_checkpoint(path, map_location="cpu")
    assert int(old.ema_denoiser.n_averaged) == 31
    assert torch.equal(with_ema, old.sample(2, generator=torch.Generator().manual_seed(0)))

    model.denoiser.load_state_dict(model.ema_denoiser.module.state_dict())
    model.ema_denoiser = None
    assert torch.equal(with_ema, model.sample(2, generator=torch.Generator().manual_seed(0)))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="beta"):
        VAE(beta=-1)
    with pytest.raises(ValueError, match="reconstruction"):
        VAE(reconstruction="l1")
    with pytest.raises(ValueError, match="r1_gamma"):
        GAN(r1_gamma=-1)
    for cls in (VAE, GAN, NeuroSQL):
        with pytest.raises(ValueError, match="upsample must be one of"):
            cls(upsample="bilinear")
    for cls in (VAE, GAN):  # the generator's settings are checked before the data's image shape is known
        with pytest.raises(ValueError, match="unknown generator 'vit'"):
            cls(generator="vit")
        with pytest.raises(ValueError, match="latent_dim must be >= 1"):
            cls(latent_dim=0)
    with pytest.raises(ValueError, match="sample_steps"):
        DDPM(timesteps=10, sample_steps=20)
    with pytest.raises(ValueError, match="schedule"):
        DDPM(schedule="quadratic")
    with pytest.raises(ValueError, match="divisible"):
        DDPM(channel_mults=(1, 2, 2, 2), image_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="param_budget"):
        DDPM(param_budget="dcgan-64", image_shape=(1, 28, 28))
