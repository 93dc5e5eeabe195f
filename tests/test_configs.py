"""The config pieces as package data (`neurosql_pl.configs`, experiments/configs in the repository),
the CLI's short names for them (`--config data/mnist`), and NeuroSQL's one source of defaults:
its constructor, which `model/neurosql` (make train's piece) leaves as it is and every other
NeuroSQL piece overrides only where it differs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

import neurosql_pl.configs as configs
from neurosql_pl import NeuroSQL
from neurosql_pl.cli import expand_config_names, main
from neurosql_pl.datamodules.prepare import CONFIG_DIR
from tests.helpers.cli_args import CONFIGS
from tests.helpers.image_files import write_image_folder

NEUROSQL = "neurosql_pl.NeuroSQL"
#: the constructor's defaults, but for the sizes that come from the data
DEFAULTS = {name: p.default for name, p in inspect.signature(NeuroSQL.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in ("image_shape", "num_samples")}


def neurosql_pieces() -> dict[str, dict]:
    """Name → init_args of every model piece of NeuroSQL."""
    pieces = {path.stem: yaml.safe_load(path.read_text())["model"] for path in sorted((CONFIGS / "model").glob("*.yaml"))}
    return {name: model.get("init_args") or {} for name, model in pieces.items() if model["class_path"] == NEUROSQL}


def test_the_package_is_the_repositorys_config_folder():
    assert configs.config_dir() == CONFIGS.resolve()
    assert CONFIG_DIR == configs.config_dir("data") == CONFIGS.resolve() / "data"
    for kind in configs.KINDS:
        assert configs.available(kind) == sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml"))
    assert configs.config_path("model", "vae") == configs.config_path("model", "vae.yaml") == CONFIGS.resolve() / "model" / "vae.yaml"


def test_unknown_kind_or_name_lists_the_choices():
    with pytest.raises(ValueError, match="one of data, model, trainer"):
        configs.config_dir("optimizer")
    with pytest.raises(FileNotFoundError, match="no data config 'imagenet'; available: afhq, celeba"):
        configs.config_path("data", "imagenet")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("data/mnist", ("data", "mnist")), ("model/neurosql_mse.yaml", ("model", "neurosql_mse")),
     ("data/imagenet", None), ("optimizer/adam", None), ("mnist", None), ("data/../model/vae", None), ("{data: 1}", None)],
)
def test_packaged_config_reads_kind_slash_name_only(value, expected):
    path = configs.packaged_config(value)
    assert path == (None if expected is None else configs.config_path(*expected))


def test_expand_config_names_rewrites_short_names_in_every_spelling(tmp_path, monkeypatch):
    mnist = str(configs.config_path("data", "mnist"))
    args = ["fit", "--config", "data/mnist", "-c", "data/mnist", "--config=data/mnist", "--model.name", "data/mnist"]
    assert expand_config_names(args) == ["fit", "--config", mnist, "-c", mnist, f"--config={mnist}", "--model.name", "data/mnist"]
    assert expand_config_names(["--config", "data/imagenet", "--config"]) == ["--config", "data/imagenet", "--config"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").write_text("data: {}\n")
    monkeypatch.chdir(tmp_path)
    assert expand_config_names(["--config", "data/mnist"]) == ["--config", "data/mnist"]  # a file here wins
    (tmp_path / "data" / "emoji3d").mkdir()  # a data folder of that name (the dataset itself) does not
    assert expand_config_names(["--config", "data/emoji3d"]) == ["--config", str(configs.config_path("data", "emoji3d"))]


def test_the_cli_accepts_short_names(tmp_path: Path):
    cli = main(
        ["--config", "trainer/default", "--config", "model/neurosql_mse", "--config", "data/mnist",
         "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    assert type(cli.model).__name__ == "NeuroSQL" and type(cli.datamodule).__name__ == "MNISTDataModule"
    assert cli.model.hparams.pixel == "l2"  # from model/neurosql_mse


def test_the_gpu_trainer_piece_sets_precision_workers_quality_and_best_by_kid(tiny_mnist: Path, tmp_path: Path):
    """Its data settings land on whichever data piece comes before it; on this CPU only the
    accelerator is overridden, and nothing is trained (run=False)."""
    from neurosql_pl.quality_callback import SampleQuality

    cli = main(["--config", "model/neurosql", "--config", "data/mnist", "--config", "trainer/gpu",
                "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--data.data_dir", str(tiny_mnist),
                "--trainer.default_root_dir", str(tmp_path / "run")], run=False)
    assert cli.trainer.precision == "bf16-mixed"
    assert cli.datamodule.num_workers == 8 and cli.datamodule.pin_memory and cli.datamodule.batch_size == 128
    quality = [c for c in cli.trainer.callbacks if isinstance(c, SampleQuality)]
    assert len(quality) == 1 and quality[0].n == 2000 and quality[0].every_n_epochs == 1
    assert cli.trainer.checkpoint_callback.monitor == "val/kid" and cli.trainer.checkpoint_callback.mode == "min"
    assert cli.trainer.checkpoint_callback.save_last


def test_neurosql_pieces_list_only_the_settings_that_differ_from_the_defaults():
    pieces = neurosql_pieces()
    assert {"neurosql", "neurosql_gpu", "neurosql_lpips", "neurosql_mse", "neurosql_unet"} <= set(pieces)
    assert pieces["neurosql"] == {}  # make train's piece: the defaults themselves
    for name, init_args in pieces.items():
        assert set(init_args) <= set(DEFAULTS), f"{name}: unknown keys {set(init_args) - set(DEFAULTS)}"
        same = {key: value for key, value in init_args.items() if value == DEFAULTS[key]}
        assert not same, f"{name} repeats defaults: {same}"


def test_make_train_resolves_to_the_constructors_defaults(tmp_path: Path):
    """`NeuroSQL()` in Python is the model `make train` trains (model, data and trainer pieces)."""
    cli = main(["--config", "model/neurosql", "--config", "data/mnist", "--config", "trainer/default",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)], run=False)
    def plain(settings) -> dict:  # the CLI gives tuples (betas) as lists
        return {key: list(settings[key]) if isinstance(settings[key], tuple) else settings[key] for key in DEFAULTS}

    assert plain(cli.model.hparams) == plain(NeuroSQL().hparams) == plain(DEFAULTS)


def test_make_train_fits_a_folder_of_fewer_images_than_the_block_size(tmp_path: Path):
    """12 images and the default m = 256: one global assignment per epoch, no clamp needed."""
    data_dir = write_image_folder(tmp_path / "data", n=12)
    run = tmp_path / "run"
    cli = main(["fit", "--config", "model/neurosql", "--config", "data/folder", "--config", "trainer/default",
                "--data.data_dir", str(data_dir), "--trainer.max_epochs", "1", "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run),
                "--model.lattice_cache_dir", str(tmp_path / "lattices")])
    assert cli.model.hparams.block_size == 256 and cli.model.num_samples == 12
    assert sorted(cli.model.assignment.tolist()) == list(range(12))
    assert cli.trainer.callback_metrics["assign/frac_changed"] >= 0
    assert torch.equal(cli.model.latents, cli.model.lattice[cli.model.assignment])  # rho = 1
