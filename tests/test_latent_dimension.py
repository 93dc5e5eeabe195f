"""The latent dimension chosen from N (`NeuroSQL(latent_dim="auto")`, `latent_dimension.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from neurosql_pl import NeuroSQL
from neurosql_pl.cli import main
from neurosql_pl.errors import CheckpointMismatchError
from neurosql_pl.latent_dimension import check_latent_dim, resolve_latent_dim
from tests.helpers.cli_args import tiny_fit_args
from tests.helpers.fits import fit, small_model

N = 64  # tiny MNIST's images


@pytest.mark.parametrize("num_images, d", [(2, 6), (1_000, 6), (5_000, 6), (5_001, 16), (60_000, 16)])
def test_auto_is_six_up_to_five_thousand_images_and_sixteen_above(num_images: int, d: int) -> None:
    assert resolve_latent_dim("auto", num_images) == d
    assert resolve_latent_dim(3, num_images) == 3  # a number is kept at every N


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "big", None])
def test_a_latent_dim_that_is_not_a_positive_integer_or_auto_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1 or 'auto'"):
        check_latent_dim(bad)
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1 or 'auto'"):
        NeuroSQL(latent_dim=bad)


def test_the_default_resolves_from_the_data_and_a_checkpoint_keeps_the_number(tiny_mnist: Path, tmp_path: Path) -> None:
    """The constructor's default is "auto"; a fit on 64 images builds d = 6 codes, generator input
    and lattice, records 6, and a checkpoint loads as d = 6. Resuming it with another d is refused
    with the flag to use, and the checkpoint is kept."""
    assert NeuroSQL().hparams.latent_dim == "auto"
    model = small_model(tmp_path, latent_dim="auto")
    trainer = fit(model, tiny_mnist, tmp_path / "run", epochs=1)
    assert model.hparams.latent_dim == 6
    assert model.lattice.shape == (N, 6) and model.latents.shape == (N, 6)
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    restored = NeuroSQL.load_from_checkpoint(path)
    assert restored.hparams.latent_dim == 6 and torch.equal(restored.latents, model.latents)
    resumed = small_model(tmp_path, latent_dim="auto")  # the same N resolves to the same d: resumes
    fit(resumed, tiny_mnist, tmp_path / "run2", epochs=2, ckpt_path=path)
    assert resumed.hparams.latent_dim == 6 and resumed.current_epoch == 2
    with pytest.raises(CheckpointMismatchError, match=r"latent_dim=6 .*--model.latent_dim 6"):
        fit(small_model(tmp_path, latent_dim=16), tiny_mnist, tmp_path / "run3", epochs=2, ckpt_path=path)
    assert path.read_bytes() == before


def test_the_cli_takes_auto_and_the_run_records_the_resolved_d(tiny_mnist: Path, tmp_path: Path) -> None:
    """`--model.latent_dim auto` through LightningCLI: config.yaml keeps the setting as given,
    the checkpoint the number it resolved to (6 for tiny MNIST's 64 images)."""
    run = tmp_path / "run"
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.max_epochs", "1", "--trainer.logger", "false",
                       "--model.latent_dim", "auto"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["latent_dim"] == "auto"
    restored = NeuroSQL.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert restored.hparams.latent_dim == 6 and restored.generator.latent_dim == 6
