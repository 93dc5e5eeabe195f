"""The NeuroSQL LightningModule: per-sample state, training, checkpoints, generation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL
from neurosql_pl.assignment import check_permutation, pca_assignment, random_assignment
from tests.helpers.fits import KeepCosts, TrainingInputs, fit, small_model


def test_training_keeps_pi_a_permutation_and_moves_codes_to_the_lattice(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path)
    trainer = fit(model, tiny_mnist, tmp_path / "run")
    check_permutation(model.assignment, 64)
    assert torch.equal(model.latents, model.lattice[model.assignment])  # rho = 1: Ẑ = Q_π
    assert {"assign/mean_cost", "assign/frac_changed", "assign/time_s"} <= set(trainer.callback_metrics)


def test_checkpoint_round_trip_restores_lattice_pi_and_codes_exactly(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path, rho=0.3)
    trainer = fit(model, tiny_mnist, tmp_path / "run")
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = NeuroSQL.load_from_checkpoint(path)
    for name in ("lattice", "assignment", "latents"):
        assert torch.equal(getattr(restored, name), getattr(model, name)), name
    for (k, a), (_, b) in zip(model.generator.state_dict().items(), restored.generator.state_dict().items()):
        assert torch.equal(a, b), k
    assert bool(restored.initialized)


def test_sample_reconstruct_interpolate_shapes_and_range(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path)
    fit(model, tiny_mnist, tmp_path / "run", epochs=1)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1
    assert model.reconstruct(torch.tensor([0, 3])).shape == (2, 1, 28, 28)
    path = model.interpolate(0, 1, steps=6)
    assert path.shape == (6, 1, 28, 28)
    assert torch.allclose(path[0], model.reconstruct(torch.tensor([0]))[0], atol=1e-6)


def test_pca_init_assigns_a_permutation(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path, init="pca")
    fit(model, tiny_mnist, tmp_path / "run", epochs=1)
    check_permutation(model.assignment, 64)


def test_a_checkpoint_for_other_data_is_refused(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path)
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=1)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="N=64"):
        fit_data = MNISTDataModule(data_dir=str(tiny_mnist), batch_size=16, download=False, subset=32)
        L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path / "r2").fit(
            small_model(tmp_path), datamodule=fit_data, ckpt_path=tmp_path / "model.ckpt"
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"block_size": 1}, "block_size"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"assign_every": 0}, "assign_every"),
        ({"init": "kmeans"}, "init"),
        ({"solver": "auction"}, "solver"),
        ({"cost_outputs": "stale"}, "cost_outputs"),
        ({"cost_outputs": "epoch", "rho": 0.5}, "rho=1"),
        ({"pixel": "l3"}, "pixel"),
        ({"oversample": 0}, "oversample"),
        ({"oversample": "many"}, "oversample"),
        ({"code_noise": -0.1}, "code_noise"),
        ({"code_noise": float("nan")}, "code_noise"),
        ({"code_noise": 0.1, "cost_outputs": "epoch"}, "set cost_outputs='fresh'"),
    ],
)
def test_impossible_settings_are_refused(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_model(tmp_path, **overrides)


@pytest.mark.parametrize("pixel", ["l2", "laplacian_l1"])
def test_cached_real_features_give_the_training_loss_exactly(tiny_mnist: Path, tmp_path: Path, pixel: str) -> None:
    """ℓ via the bank, ‖F(G(Ẑ_i)) − F(X_i)‖² + ‖ψ(G(Ẑ_i)) − ψ(X_i)‖₁, equals the loss computed from the images."""
    model = small_model(
        tmp_path, perceptual="lpips-alex", pretrained_backbone=False, feature_cache_gb=1.0, pixel=pixel
    )
    banks = KeepCosts()
    fit(model, tiny_mnist, tmp_path / "run", epochs=1, callbacks=[banks])
    assert banks.real_bank is not None and banks.real_bank.values.dtype == torch.float32
    with pytest.raises(RuntimeError, match="during a fit"):
        model.assignment_costs()  # freed after fit
    datamodule = MNISTDataModule(data_dir=str(tiny_mnist), download=False)
    datamodule.setup("fit")
    idx = torch.arange(10)
    fake = model.generator.eval()(model.latents[idx])
    via_bank = model.loss_fn.distance_from_features(model.loss_fn.features(fake), banks.real_bank.get(idx), (1, 28, 28))
    direct = model.loss_fn(fake, datamodule.train_images()[idx])
    assert torch.allclose(via_bank, direct, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("pixel", ["l2", "laplacian_l1"])
def test_epoch_outputs_are_reused_by_the_assignment(tiny_mnist: Path, tmp_path: Path, pixel: str) -> None:
    model = small_model(tmp_path, cost_outputs="epoch", pixel=pixel)
    banks = KeepCosts()
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=2, callbacks=[banks])
    assert trainer.callback_metrics["assign/frac_reused"] == 1.0  # every lattice point was seen in training
    check_permutation(model.assignment, 64)
    assert not banks.fake_bank.filled.any()  # cleared for the next epoch


def test_no_bank_over_budget_falls_back_to_fresh_features(tiny_mnist: Path, tmp_path: Path) -> None:
    model = small_model(tmp_path, feature_cache_gb=0.0)
    banks = KeepCosts()
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=1, callbacks=[banks])
    assert banks.real_bank is None and banks.fake_bank is None
    assert trainer.callback_metrics["assign/frac_reused"] == 0.0
    check_permutation(model.assignment, 64)


@pytest.mark.parametrize("pixel", ["l2", "l1", "laplacian_l1"])
def test_every_cost_source_gives_the_same_assignment(tiny_mnist: Path, tmp_path: Path, pixel: str) -> None:
    """Costs from recorded epoch outputs, from fresh passes with banks (float32 or float16), or
    without banks are the same numbers, so the assignment step makes the same π and Ẑ — for a
    squared loss and for the L1 losses, whose banks hold ψ beside F.

    lr = 0 keeps the generator fixed through the epoch, and a generator without BatchNorm gives
    the same output for a code in training and in eval mode, so the features recorded by the
    training steps must equal the fresh ones for the same lattice points.
    """
    settings = dict(lr=0.0, image_shape=(1, 28, 28), num_samples=64, pixel=pixel)
    dim = small_model(tmp_path, **settings).loss_fn.feature_dim((1, 28, 28))
    fp16_budget = 3 * 64 * dim / 2**30  # 3 bytes per value: float16 fits, float32 does not
    runs = {  # name → (overrides, bank dtype, relative tolerance of the costs)
        "no banks": ({"feature_cache_gb": 0.0}, None, 0.0),
        "fresh": ({"cost_outputs": "fresh"}, torch.float32, 1e-5),
        "epoch": ({"cost_outputs": "epoch"}, torch.float32, 1e-5),
        "epoch, float16": ({"cost_outputs": "epoch", "feature_cache_gb": fp16_budget}, torch.float16, 5e-3),
    }
    results = {}
    for name, (overrides, dtype, _) in runs.items():
        model = small_model(tmp_path, **settings, **overrides)
        torch.manual_seed(0)  # the same weights in every run
        model.generator = nn.Sequential(nn.Linear(4, 28 * 28), nn.Unflatten(1, (1, 28, 28)), nn.Tanh())
        banks = KeepCosts()
        fit(model, tiny_mnist, tmp_path / name, epochs=1, callbacks=[banks])  # one epoch and its assignment step
        costs = banks.recorded
        assert (banks.real_bank.values.dtype if banks.real_bank is not None else None) == dtype, name
        if overrides.get("cost_outputs") == "epoch":
            assert banks.fake_bank.values.dtype == dtype, name
        results[name] = (torch.cat(costs), model.assignment.clone(), model.latents.clone())
    costs0, pi0, latents0 = results["no banks"]
    assert costs0.shape == (4, 16, 16)  # 64 samples in blocks of 16
    for name, (costs, pi, latents) in results.items():
        tolerance = runs[name][2]
        assert torch.allclose(costs, costs0, rtol=tolerance, atol=tolerance * costs0.mean()), name
        assert torch.equal(pi, pi0), name
        assert torch.equal(latents, latents0), name


def test_pca_init_is_the_ot_pca_assignment(tiny_mnist: Path, tmp_path: Path) -> None:
    """init="pca" gives exactly `pca_assignment` of the training images (same seed and block size)."""
    model = small_model(tmp_path, init="pca", assign_every=2)
    fit(model, tiny_mnist, tmp_path / "run", epochs=1)  # no assignment step yet: π is the initial one
    datamodule = MNISTDataModule(data_dir=str(tiny_mnist), download=False)
    datamodule.setup("fit")
    expected = pca_assignment(datamodule.train_images, model.lattice, torch.Generator().manual_seed(0), block_size=16)
    assert torch.equal(model.assignment, expected)
    assert not torch.equal(expected, random_assignment(64, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("code_noise", [0.0, 0.5])
def test_code_noise_feeds_the_generator_noisy_codes_and_leaves_the_codes_alone(
    tiny_mnist: Path, tmp_path: Path, code_noise: float
) -> None:
    """The generator's input is Ẑ_i + σ·ε with ε ~ N(0, I) drawn afresh at every step: σ = 0 gives
    Ẑ_i exactly and draws nothing from the random state (training as before the option); σ = 0.5
    gives an offset of mean ≈ 0 and standard deviation ≈ σ, new in every epoch. Ẑ itself does not
    move (2 epochs, no assignment step), and `reconstruct` is noise-free."""
    model = small_model(tmp_path, code_noise=code_noise, assign_every=100, image_shape=(1, 28, 28), num_samples=64)
    spy = TrainingInputs(model.generator)
    fit(model, tiny_mnist, tmp_path / "run", epochs=2, callbacks=[spy])
    idx = torch.cat(spy.indices)
    offset = torch.cat(spy.inputs) - model.latents[idx]
    assert len(idx) == 128 and torch.equal(model.latents, model.lattice[model.assignment])  # Ẑ = its initial Q_π
    if code_noise == 0:
        assert torch.equal(offset, torch.zeros_like(offset)) and not any(spy.drew)
    else:
        assert all(spy.drew)
        assert abs(float(offset.mean())) < 0.1 and float(offset.std()) == pytest.approx(code_noise, rel=0.1)
        first, second = offset[:64][idx[:64].argsort()], offset[64:][idx[64:].argsort()]
        assert not torch.allclose(first, second)  # fresh noise in each epoch
    with torch.no_grad():
        expected = model.generator.eval()(model.latents[:8])
    assert torch.equal(model.reconstruct(torch.arange(8)), expected)
