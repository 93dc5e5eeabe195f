"""The four models share one base (`GenerativeModel`): `neurosql sample` records the truth about
the EMA and draws with the network the model names, `CompileGenerator` compiles the network
each one trains, and the evaluation asks the model what it reconstructs from."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from neurosql_pl import NeuroSQL
from neurosql_pl.baselines import DDPM, GAN, VAE
from neurosql_pl.cli import main as cli_main
from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl.evaluate import draw_samples, reconstruct_callable
from neurosql_pl.generative_model import GenerativeModel
from neurosql_pl.gpu import CompileGenerator
from neurosql_pl.images import to_uint8
from neurosql_pl.sampling import sample_to_folder
from tests.helpers.cli_args import baseline_fit_args, tiny_fit_args
from tests.helpers.idx_files import write_mnist_idx

CLASSES = {"neurosql": NeuroSQL, "vae": VAE, "gan": GAN, "ddpm": DDPM}
TRAINED = {"neurosql": "generator", "vae": "decoder", "gan": "generator", "ddpm": "denoiser"}  # checkpoint key prefixes
DECAY = 0.9
N, SEED = 6, 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread (for the module's fits too): tiny networks gain nothing from two, and lose
    much on a shared 2-core machine (see tests/test_baselines.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    write_mnist_idx(path, n_train=64, n_test=16)
    return path


@pytest.fixture(scope="module", params=[(name, decay) for name in CLASSES for decay in (0.0, DECAY)],
                ids=lambda p: f"{p[0]}-ema{p[1]}")
def run(request, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float, Path]:
    """(model name, ema_decay, last.ckpt) of a one-epoch CLI fit of that model on tiny MNIST."""
    name, decay = request.param
    root = tmp_path_factory.mktemp(f"{name}_{decay}")
    ema = ["--model.ema_decay", str(decay)]
    if name == "neurosql":
        args = tiny_fit_args(data_dir, root / "run", root / "lattices", "--trainer.logger", "false",
                             "--model.perceptual", "null", "--trainer.max_epochs", "1", *ema)
    else:
        args = baseline_fit_args(name, data_dir, root / "run", *ema)
    cli_main(args)
    return name, decay, root / "run" / "checkpoints" / "last.ckpt"


def samples_of(model: GenerativeModel) -> np.ndarray:
    """The N samples `neurosql sample --seed SEED` draws from this model, as uint8 (N, H, W, C)."""
    return to_uint8(draw_samples(model, N, SEED, batch_size=256)).permute(0, 2, 3, 1).numpy()


def test_sample_json_says_whether_the_samples_come_from_the_ema_and_they_do(run, tmp_path: Path) -> None:
    name, decay, ckpt = run
    record = sample_to_folder(ckpt, n=N, seed=SEED, out=tmp_path / "samples")
    written = np.load(tmp_path / "samples" / "samples.npz")["arr_0"]
    assert json.loads((tmp_path / "samples" / "sample.json").read_text())["ema"] is record["ema"] is (decay > 0)

    cls = CLASSES[name]
    trained = cls.load_from_checkpoint(ckpt, map_location="cpu")
    ema = getattr(trained, f"ema_{TRAINED[name]}")  # the checkpoint's EMA weights, by their state-dict name
    assert (ema is not None) is (decay > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the checkpoint's EMA weights are not used"
        reference = cls.load_from_checkpoint(ckpt, map_location="cpu", ema_decay=0.0).eval()  # samples with the trained weights
    from_trained = samples_of(reference)
    sampled_with = ema.module if ema is not None else getattr(trained, TRAINED[name])
    getattr(reference, TRAINED[name]).load_state_dict(sampled_with.state_dict())
    assert np.array_equal(written, samples_of(reference))  # the EMA's images with an EMA, the trained weights' without
    assert np.array_equal(written, from_trained) is (decay == 0)


def fitted_with_compile(name: str, data_dir: Path, root: Path) -> tuple[GenerativeModel, L.Trainer]:
    """A tiny model (ema_decay 0.9) fitted 2 steps with CompileGenerator (backend "eager": the
    graph is captured, not lowered to C++), and its trainer."""
    if name == "neurosql":
        model = NeuroSQL(latent_dim=4, generator_width=8, block_size=16, perceptual=None, pixel="l2",
                         lattice_cache_dir=str(root / "lattices"), ema_decay=DECAY)
    elif name == "ddpm":
        model = DDPM(width=8, timesteps=20, sample_steps=4, ema_decay=DECAY)
    else:
        model = CLASSES[name](latent_dim=4, generator_width=8, ema_decay=DECAY)
    trainer = L.Trainer(max_steps=2, default_root_dir=root, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        callbacks=[CompileGenerator(backend="eager")])
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False))
    return model, trainer


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches emptied before and after the test."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_compile_generator_compiles_the_trained_network_of_every_model(name: str, data_dir: Path, tmp_path: Path, fresh_dynamo) -> None:
    model, trainer = fitted_with_compile(name, data_dir, tmp_path)
    trained, ema = getattr(model, TRAINED[name]), getattr(model, f"ema_{TRAINED[name]}")
    assert trainer.global_step == 2 and trained._compiled_call_impl is not None
    assert ema.module._compiled_call_impl is None  # the EMA copy samples uncompiled, and it kept up with training
    assert int(ema.n_averaged) == 1 + (1 if name == "gan" else 2)  # the GAN: one generator step per 2 optimiser steps
    assert not any("_orig_mod" in key for key in model.state_dict())  # checkpoint keys as without compiling
    inputs = (torch.randn(3, 4),) if name != "ddpm" else (torch.randn(3, 1, 28, 28), torch.tensor([0, 5, 19]))
    trained.eval()
    with torch.no_grad():
        assert torch.allclose(trained(*inputs), trained._call_impl(*inputs), atol=1e-6)  # compiled = eager


def test_compile_generator_refuses_a_module_that_names_no_trained_network() -> None:
    with pytest.raises(TypeError, match="GenerativeModel"):
        CompileGenerator().on_fit_start(None, L.LightningModule())


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_model_names_its_networks_and_what_it_reconstructs_from(name: str) -> None:
    shape = (1, 28, 28)
    sizes = {"image_shape": shape, "num_samples": 4, "perceptual": None, "block_size": 2} if name == "neurosql" else {"image_shape": shape}
    plain, averaged = CLASSES[name](**sizes), CLASSES[name](**sizes, ema_decay=DECAY)
    trained = getattr(plain, TRAINED[name])
    assert plain.trained_network() is trained and plain.sampling_network() is trained and not plain.uses_ema
    ema = getattr(averaged, f"ema_{TRAINED[name]}")
    assert averaged.sampling_network() is ema.module and averaged.ema is ema and averaged.uses_ema
    assert plain.reconstructs_from == {"neurosql": "indices", "vae": "images"}.get(name)
    assert (reconstruct_callable(plain) is None) is (plain.reconstructs_from is None)


def test_reconstructions_for_the_evaluation_come_from_what_the_model_names() -> None:
    x, idx = torch.rand(2, 1, 28, 28) * 2 - 1, torch.tensor([1, 3])
    vae = VAE(latent_dim=4, generator_width=8, image_shape=(1, 28, 28)).eval()
    assert torch.equal(reconstruct_callable(vae)(x, idx), vae.reconstruct_images(x))
    neurosql = NeuroSQL(latent_dim=4, generator_width=8, image_shape=(1, 28, 28), num_samples=4, perceptual=None, block_size=2)
    neurosql.latents.normal_()
    assert torch.equal(reconstruct_callable(neurosql)(x, idx), neurosql.reconstruct(idx))  # G(Ẑ_i): the images are not used
    with pytest.raises(TypeError, match="does not reconstruct"):
        GAN(image_shape=(1, 28, 28)).reconstruct_training(x, idx)


def test_without_a_trainer_there_is_no_datamodule_and_an_unbuilt_model_says_so() -> None:
    model = VAE()
    assert model.datamodule is None and model.ema is None and not model.uses_ema
    with pytest.raises(RuntimeError, match="has no decoder yet"):
        model.sampling_network()
