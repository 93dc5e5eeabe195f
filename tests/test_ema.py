"""EMA of the generator's weights (`ema_decay`): the average it computes, when it is updated,
which generator each use of the model draws from, and checkpoints with and without it."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from neurosql_pl import NeuroSQL
from neurosql_pl.baselines import DDPM, GAN, VAE
from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl.training_utils import WeightEMA
from tests.helpers.idx_files import write_mnist_idx
from tests.helpers.models import SMALL_NEUROSQL

DECAY = 0.9  # small enough that the warm-up d_k = min(decay, (1 + k)/(10 + k)) reaches it in 8 steps


def expected_average(states: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The documented recurrence, in float64: θ̄_0 = θ_0, θ̄_k = d_k·θ̄_{k−1} + (1 − d_k)·θ_k,
    d_k = min(decay, (1 + k)/(10 + k)); integer tensors are the latest value."""
    average = {k: v.double() for k, v in states[0].items()}
    for k, state in enumerate(states[1:], start=1):
        d = min(decay, (1 + k) / (10 + k))
        for key, value in state.items():
            average[key] = d * average[key] + (1 - d) * value.double() if value.is_floating_point() else value
    return average


def assert_state_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in actual.items():
        assert torch.allclose(value.double(), expected[key].double(), rtol=1e-5, atol=1e-6), key


def test_weight_ema_follows_the_warm_up_recurrence() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(net, DECAY)
    states = [{k: v.clone() for k, v in net.state_dict().items()}]
    for _ in range(12):  # arbitrary new weights and BatchNorm statistics, as after optimiser steps
        net.train()(torch.randn(5, 3))  # updates running_mean / running_var / num_batches_tracked
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(net)
        states.append({k: v.clone() for k, v in net.state_dict().items()})

    assert_state_close(ema.module.state_dict(), expected_average(states, DECAY))
    assert int(ema.n_averaged) == 13  # θ_0 and 12 updates
    assert ema.module[1].num_batches_tracked == 12  # integer buffers are copied, not averaged
    # the copy never trains: no gradients, eval mode whatever the parent's mode
    assert not any(p.requires_grad for p in ema.parameters())
    assert not ema.train().training and not ema.module.training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    write_mnist_idx(path, n_train=64, n_test=16)
    return path


class RecordGenerator(L.Callback):
    """The live generator's weights at the start of training and after every optimiser step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _record(self, pl_module: NeuroSQL) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.generator.state_dict().items()})

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(pl_module)


def fit(data_dir: Path, root: Path, epochs: int, ckpt: Path | None = None, callbacks=(), **model_args) -> NeuroSQL:
    L.seed_everything(0)
    model = NeuroSQL(**{**SMALL_NEUROSQL, "lattice_cache_dir": str(root.parent / "lattices"), **model_args})
    trainer = L.Trainer(
        max_epochs=epochs, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False), ckpt_path=ckpt)
    trainer.save_checkpoint(root / "model.ckpt")
    return model


@pytest.fixture(scope="module")
def with_ema(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[NeuroSQL, RecordGenerator, Path]:
    """2 epochs of 4 steps with ema_decay = 0.9, the generator recorded after every step."""
    root = tmp_path_factory.mktemp("ema")
    recorder = RecordGenerator()
    model = fit(data_dir, root, epochs=2, callbacks=[recorder], ema_decay=DECAY)
    return model, recorder, root / "model.ckpt"


def test_the_ema_is_updated_once_after_every_optimiser_step(with_ema) -> None:
    model, recorder, _ = with_ema
    assert len(recorder.states) == 1 + 8 and int(model.ema_generator.n_averaged) == 9
    assert_state_close(model.ema_generator.module.state_dict(), expected_average(recorder.states, DECAY))
    # the live generator is the one trained: optimised alone, and not the average
    optimised = {id(p) for group in model.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.generator.parameters()}
    assert not torch.equal(model.generator.project[0].weight, model.ema_generator.module.project[0].weight)


def test_sample_reconstruct_and_interpolate_use_the_ema_generator(with_ema) -> None:
    model, _, _ = with_ema
    ema, live = model.ema_generator.module, model.generator
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    samples = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(samples, model._generate(z, ema))
    assert not torch.allclose(samples, model._generate(z, live), atol=1e-4)
    idx = torch.tensor([0, 7])
    assert torch.equal(model.reconstruct(idx), model._generate(model.latents[idx], ema))
    path = model.interpolate(2, 3, steps=4)
    assert torch.allclose(path[[0, -1]], model._generate(model.latents[[2, 3]], ema), atol=1e-6)
    # the assignment's G(Q_k) and the training step use the live generator
    assert torch.equal(model._generate(z), model._generate(z, live))
    assert torch.equal(model.eval()(z), live(z))


def test_load_from_checkpoint_restores_the_ema_and_samples_with_it(with_ema) -> None:
    model, _, ckpt = with_ema
    assert {"ema_generator.n_averaged", "ema_generator.module.project.0.weight"} <= set(torch.load(ckpt)["state_dict"])
    restored = NeuroSQL.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    for key, value in model.ema_generator.state_dict().items():
        assert torch.equal(restored.ema_generator.state_dict()[key], value), key
    seed = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    assert torch.equal(restored.sample(4, generator=seed()), model.sample(4, generator=seed()))


def test_a_checkpoint_with_an_ema_loads_into_a_model_without_one(with_ema) -> None:
    model, _, ckpt = with_ema
    with pytest.warns(UserWarning, match="EMA weights .* are not used"):
        plain = NeuroSQL.load_from_checkpoint(ckpt, map_location="cpu", ema_decay=0.0)
    assert plain.ema_generator is None and not any(k.startswith("ema_") for k in plain.state_dict())
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    live = model._generate(z)  # the trained model's live generator
    assert torch.equal(plain.sample(3, generator=torch.Generator().manual_seed(0)), live)


def test_without_ema_there_is_one_generator(data_dir: Path, tmp_path: Path) -> None:
    model = fit(data_dir, tmp_path / "plain", epochs=1)  # ema_decay = 0, the default
    assert model.ema_generator is None and model.sampling_generator is model.generator
    assert not any(k.startswith("ema_") for k in model.state_dict())
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.sample(3, generator=torch.Generator().manual_seed(0)), model._generate(z, model.generator))

    # a checkpoint without EMA weights: loaded with an EMA, it starts from the generator's weights
    with pytest.warns(UserWarning, match="no EMA weights"):
        loaded = NeuroSQL.load_from_checkpoint(tmp_path / "plain" / "model.ckpt", map_location="cpu", ema_decay=DECAY)
    for key, value in loaded.generator.state_dict().items():
        assert torch.equal(loaded.ema_generator.module.state_dict()[key], value), key
    assert torch.equal(loaded.sample(3, generator=torch.Generator().manual_seed(0)), model.sample(3, generator=torch.Generator().manual_seed(0)))
    # and a run resumed from it with an EMA trains on, averaging from there (4 more steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = fit(data_dir, tmp_path / "plain", epochs=2, ckpt=tmp_path / "plain" / "model.ckpt", ema_decay=DECAY)
    assert int(resumed.ema_generator.n_averaged) == 1 + 4


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("cls", [NeuroSQL, VAE, GAN, DDPM])
def test_an_ema_decay_outside_0_1_is_refused(cls: type, decay: float) -> None:
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        cls(ema_decay=decay)
