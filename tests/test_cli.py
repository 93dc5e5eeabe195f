"""The LightningCLI entry point: a real `fit` on tiny MNIST files writes every run output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tests.helpers.cli_args import CONFIGS, tiny_fit_args
from PIL import Image

from neurosql_pl.cli import main
from neurosql_pl.run_folder import train_metrics


def test_fit_writes_every_run_output(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--model.rho", "0.5"))

    assert (run / "checkpoints" / "last.ckpt").is_file()
    samples = Image.open(run / "samples.png")
    assert samples.mode == "RGB" and samples.size == (8 * 30 + 2, 8 * 30 + 2)  # 8×8 grid of 28 px
    assert (run / "reconstructions.png").is_file()

    metrics = train_metrics(run)
    for key in ("train_loss", "assign_mean_cost", "assign_frac_changed", "epoch_time_s", "total_time_s"):
        assert isinstance(metrics[key], float) and metrics[key] >= 0, key
    assert metrics["epochs"] == 2
    assert 0.0 <= metrics["assign_frac_changed"] <= 1.0

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["rho"] == 0.5  # the override is in the resolved config
    assert any((run / "wandb").glob("offline-run-*"))  # a real W&B run, offline

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["num_samples"] == 64
    assert sorted(ckpt["state_dict"]["assignment"].tolist()) == list(range(64))


def test_a_second_fit_never_overwrites_an_earlier_runs_checkpoints(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.max_epochs", "1", "--trainer.logger", "false")
    main(args)
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(SystemExit, match="already holds checkpoints.*--ckpt_path.*--overwrite true"):
        main(args)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    main([*args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "2"])  # resuming is allowed
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8  # 2 epochs of 4 steps


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml")))
def test_every_model_config_parses_with_overrides(model: str, tmp_path: Path) -> None:
    overrides = ["--model.rho", "0.5", "--model.cost_outputs", "fresh"] if model.startswith("neurosql") else []
    cli = main(
        ["--config", str(CONFIGS / "trainer" / "default.yaml"), "--config", str(CONFIGS / "model" / f"{model}.yaml"),
         "--config", str(CONFIGS / "data" / "mnist.yaml"), *overrides,
         "--data.batch_size", "256", "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    assert cli.datamodule.hparams.batch_size == 256
    if overrides:
        assert cli.model.hparams.rho == 0.5
