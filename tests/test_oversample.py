"""The oversampled lattice (`NeuroSQL(oversample=k)`, `oversampling.py`): K = k·N lattice points,
k per image, as a capacity-k assignment over K codes (code v belongs to image v mod N)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

import neurosql_pl.module
from neurosql_pl import NeuroSQL
from neurosql_pl.assignment import check_permutation, pca_assignment, random_assignment
from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl.lattice import build_lattice
from neurosql_pl.oversampling import image_of, keep_held_points, resolve_oversample
from tests.helpers.fits import KeepCosts, TrainingInputs, fit, small_model
from tests.helpers.models import SMALL_NEUROSQL

N, K = 64, 192  # tiny MNIST's images; their codes at k = 3


def points_per_image(assignment: torch.Tensor, num_images: int) -> torch.Tensor:
    """(N,) how many lattice points each image holds, counted from the points' side: the image
    of the code holding each lattice point."""
    holder = torch.empty_like(assignment)
    holder[assignment] = torch.arange(len(assignment))
    return torch.bincount(image_of(holder, num_images), minlength=num_images)


def sets_per_image(assignment: torch.Tensor, num_images: int) -> list[set[int]]:
    return [set(assignment[image_of(torch.arange(len(assignment)), num_images) == i].tolist()) for i in range(num_images)]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"block_strategy": "neighbours", "assign_sweeps": 2},
        {"block_strategy": "multiscale", "init": "pca", "cost_outputs": "epoch", "pixel": "l1"},
    ],
    ids=["random", "neighbours", "multiscale-pca-epoch"],
)
def test_every_lattice_point_is_held_once_and_every_image_k_times(tiny_mnist: Path, tmp_path: Path, overrides: dict) -> None:
    model = small_model(tmp_path, oversample=3, **overrides)
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=2)
    assert (model.num_samples, model.codes_per_image, model.num_codes) == (N, 3, K)
    assert model.lattice.shape == (K, 4) and model.latents.shape == (K, 4)
    check_permutation(model.assignment, K)  # every lattice point held exactly once
    assert torch.equal(points_per_image(model.assignment, N), torch.full((N,), 3))
    assert torch.equal(model.latents, model.lattice[model.assignment])  # rho = 1: the codes are lattice rows
    assert len(model.lattice.unique(dim=0)) == K  # K distinct quantile points
    if overrides.get("cost_outputs") == "epoch":  # one code of each image trained per epoch: N of K points recorded
        assert float(trainer.callback_metrics["assign/frac_reused"]) == pytest.approx(N / K)


def model_before_an_assignment(data_dir: Path, copies: int, **overrides) -> NeuroSQL:
    """A small NeuroSQL with k = `copies` on the 64 tiny-MNIST images, its K-point lattice, a
    random π and its cost side, as at an epoch end (untrained generator: costs differ)."""
    torch.manual_seed(0)
    model = NeuroSQL(**{**SMALL_NEUROSQL, **overrides}, oversample=copies, image_shape=(1, 28, 28), num_samples=N)
    model.lattice = build_lattice(copies * N, 4, "cube", "closed_form", 0)
    model.assignment = random_assignment(copies * N, torch.Generator().manual_seed(0))
    model.latents = model.lattice[model.assignment].clone()
    datamodule = MNISTDataModule(data_dir=str(data_dir), download=False)
    datamodule.setup("fit")
    model.build_assignment_costs(datamodule.train_images)
    return model


@pytest.mark.parametrize("block_size", [K, 256])
def test_a_block_of_all_codes_gives_the_capacity_k_optimum(tiny_mnist: Path, block_size: int) -> None:
    """m ≥ K is one global assignment of the K codes: the K×K cost has image i's row repeated
    for its k codes, its scipy optimum is the optimal transport with k units per image and one
    per lattice point (POT on the N×K cost), and the step reaches it: the same total and the same
    k points per image. A second step on the same costs changes no code."""
    model = model_before_an_assignment(tiny_mnist, copies=3, block_size=block_size, block_strategy="multiscale", assign_sweeps=2)
    codes = torch.arange(K)[None]
    cost = model.assignment_costs().block_costs(codes, codes)[0].double()
    assert torch.equal(cost, cost[image_of(torch.arange(K), N)])  # code v scores as image v mod N
    rows, cols = linear_sum_assignment(cost.numpy())
    best = float(cost[rows, cols].sum())
    plan = ot.emd(np.full(N, 3 / K), np.full(K, 1 / K), cost[:N].numpy())
    assert float((plan * cost[:N].numpy()).sum()) * K == pytest.approx(best, rel=1e-9)
    (callback,) = model.configure_callbacks()
    stats = callback.assign(model, epoch=0)
    assert stats["total_cost"] == pytest.approx(best, rel=1e-6)
    assert sets_per_image(model.assignment, N) == sets_per_image(torch.from_numpy(cols), N)
    first = model.assignment.clone()
    again = callback.assign(model, epoch=1)
    assert torch.equal(model.assignment, first) and again["frac_changed"] == 0.0


def test_codes_keep_the_points_their_image_still_holds() -> None:
    """The relabelling after a step: each image keeps the points the new π gives it, and a code
    whose image still holds its old point gets that point again; with k = 1 nothing changes."""
    gen = torch.Generator().manual_seed(0)
    num_images, copies = 20, 4
    old = torch.randperm(80, generator=gen)
    new = old.clone()
    moved = torch.randperm(80, generator=gen)[:30]  # shuffle the points of 30 codes among them
    new[moved] = old[moved][torch.randperm(30, generator=gen)]
    relabelled = keep_held_points(old, new, num_images)
    check_permutation(relabelled, 80)
    assert sets_per_image(relabelled, num_images) == sets_per_image(new, num_images)
    image = image_of(torch.arange(80), num_images)
    still_held = torch.tensor([old[v].item() in sets_per_image(new, num_images)[image[v]] for v in range(80)])
    assert still_held.any() and not still_held.all()
    assert torch.equal(relabelled[still_held], old[still_held])
    assert keep_held_points(old, new, 80) is new  # k = 1


def test_pca_start_gives_each_image_k_points_near_its_score() -> None:
    """Images that differ along one direction: with k = 2, π is a permutation of the 2N points and
    both codes of an image sit in order along the first lattice axis."""
    gen = torch.Generator().manual_seed(5)
    t = torch.linspace(-1, 1, 128)
    direction = torch.randn(1, 1, 8, 8, generator=gen)
    images = t[:, None, None, None] * direction + 0.01 * torch.randn(128, 1, 8, 8, generator=gen)
    lattice = torch.randn(256, 2, generator=gen)
    pi = pca_assignment(images.__getitem__, lattice, gen, block_size=256, num_images=128)
    check_permutation(pi, 256)
    first = lattice[pi][:, 0]
    for copy in (0, 1):
        corr = torch.corrcoef(torch.stack([first[copy * 128 : (copy + 1) * 128], t]))[0, 1].abs()
        assert corr > 0.9


def test_training_trains_every_code_of_every_image(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    """Each visit of image i trains one of its codes i + r·N, whose Ẑ is exactly the generator's
    input; over 4 epochs with k = 2 nearly all 2N codes are trained, both copies of most images."""
    trained = []
    draw = neurosql_pl.module.draw_codes

    def spy_codes(images: torch.Tensor, copies: int, num_images: int) -> torch.Tensor:
        codes = draw(images, copies, num_images)
        assert torch.equal(image_of(codes, num_images), images)
        trained.append(codes)
        return codes

    monkeypatch.setattr(neurosql_pl.module, "draw_codes", spy_codes)
    # no assignment step in 4 epochs: Ẑ stays as it starts
    model = small_model(tmp_path, oversample=2, assign_every=100, image_shape=(1, 28, 28), num_samples=N)
    spy_inputs = TrainingInputs(model.generator)
    fit(model, tiny_mnist, tmp_path / "run", epochs=4, callbacks=[spy_inputs])
    codes = torch.cat(trained)
    assert torch.equal(torch.cat(spy_inputs.inputs), model.latents[codes])
    assert all(spy_inputs.drew)  # the copies come from the global random state
    assert len(codes) == 4 * N and len(codes.unique()) > 0.85 * 2 * N  # 1 − 2⁻⁴ of the codes expected
    assert len((codes // N).unique()) == 2


def test_epoch_outputs_give_the_fresh_costs_with_k_codes_per_image(tiny_mnist: Path, tmp_path: Path) -> None:
    """The features a training step records for code v sit at its lattice point π(v): with a
    fixed generator (lr = 0, no BatchNorm) the assignment's costs and π are those of fresh passes."""
    results = {}
    for mode in ("fresh", "epoch"):
        model = small_model(tmp_path, oversample=3, lr=0.0, cost_outputs=mode, image_shape=(1, 28, 28), num_samples=N)
        torch.manual_seed(0)
        model.generator = nn.Sequential(nn.Linear(4, 28 * 28), nn.Unflatten(1, (1, 28, 28)), nn.Tanh())
        banks = KeepCosts()
        trainer = fit(model, tiny_mnist, tmp_path / mode, epochs=1, callbacks=[banks])
        reused = float(trainer.callback_metrics["assign/frac_reused"])
        results[mode] = (torch.cat(banks.recorded), model.assignment.clone(), reused)
    (fresh, pi_fresh, reused_fresh), (epoch, pi_epoch, reused_epoch) = results["fresh"], results["epoch"]
    assert (reused_fresh, reused_epoch) == (0.0, pytest.approx(N / K))
    assert torch.allclose(epoch, fresh, rtol=1e-5, atol=1e-5 * float(fresh.mean()))
    assert torch.equal(pi_epoch, pi_fresh)


@pytest.mark.parametrize(
    ("num_images", "copies"), [(2, 100), (64, 100), (100, 100), (137, 73), (5000, 2), (9999, 2), (10_000, 1), (60_000, 1)]
)
def test_auto_gives_at_least_ten_thousand_codes(num_images: int, copies: int) -> None:
    """"auto": the least k with k·N ≥ 10,000, at most 100 codes per image (so the 10,000 hold for
    N ≥ 100), 1 from N = 10,000 on."""
    k = resolve_oversample("auto", num_images)
    assert k == copies
    if num_images >= 100:
        assert k * num_images >= 10_000 and (k == 1 or (k - 1) * num_images < 10_000)


def test_a_checkpoint_keeps_k_and_a_model_with_another_k_is_refused(tiny_mnist: Path, tmp_path: Path) -> None:
    """A checkpoint holds K = k·N rows and records k; loading it rebuilds k, and resuming it with
    another oversample says which one to use."""
    model = small_model(tmp_path, oversample="auto")
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=1)
    assert model.codes_per_image == 100 and model.hparams.oversample == 100
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = NeuroSQL.load_from_checkpoint(path)
    assert restored.num_codes == 100 * N and torch.equal(restored.assignment, model.assignment)
    with pytest.raises(ValueError, match="--model.oversample 100"):
        fit(small_model(tmp_path, oversample=2), tiny_mnist, tmp_path / "run2", epochs=2, ckpt_path=path)
