"""The data configs (experiments/configs/data) and `neurosql prepare` (also spelled
`neurosql-prepare`, `python -m neurosql_pl.datamodules.prepare`): every config builds its
datamodule, and the command says whether the data is ready."""

from __future__ import annotations

import pytest

from neurosql_pl.cli import console_main
from neurosql_pl.datamodules.prepare import CONFIG_DIR, available_configs
from neurosql_pl.datamodules.prepare import main as prepare_main
from neurosql_pl.run_folder import data_config_section, instantiate
from tests.helpers.image_files import write_image_folder


def test_every_data_config_builds_its_datamodule(tmp_path):
    assert {"mnist", "celeba", "afhq", "oasis", "folder"} <= set(available_configs())
    for name in available_configs():
        dm = instantiate(data_config_section(CONFIG_DIR / f"{name}.yaml"), {"data_dir": str(tmp_path)})
        assert type(dm).__name__.endswith("DataModule") and dm.hparams.data_dir == str(tmp_path)
        assert len(dm.image_shape) == 3


def test_prepare_cli_unknown_name_lists_the_configs(capsys):
    assert console_main(["prepare", "imagenet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown data config 'imagenet'") and "celeba" in err and "folder" in err
    assert err.count("\n") == 1


def test_prepare_cli_ready_and_missing_data(tmp_path, capsys):
    folder = write_image_folder(tmp_path, 3)
    assert console_main(["prepare", "folder", "--data.data_dir", str(folder), "--data.image_size=8"]) == 0
    assert f"folder: data ready (ImageFolderDataModule, data_dir={folder})" in capsys.readouterr().out
    assert console_main(["prepare", "celeba", "--data.data_dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CelebA not found") and "list_eval_partition.txt" in err and "Traceback" not in err
    assert console_main(["prepare", "mnist", "--data.image_size", "8"]) == 1
    assert "error: " in (err := capsys.readouterr().err) and "unexpected keyword argument 'image_size'" in err


def test_prepare_cli_takes_the_earlier_spellings(tmp_path, capsys):
    folder = write_image_folder(tmp_path, 3)
    new = ["prepare", str(CONFIG_DIR / "folder.yaml"), "--data", f"{{data_dir: {folder}, image_size: 8}}"]
    earlier = ["--config", str(CONFIG_DIR / "folder.yaml"), "--data.data_dir", str(folder), "--data.image_size=8"]
    assert console_main(new) == 0 and prepare_main(earlier) == 0  # neurosql-prepare, python -m …prepare
    ready = capsys.readouterr().out.splitlines()
    assert ready == [f"folder: data ready (ImageFolderDataModule, data_dir={folder})"] * 2
    assert prepare_main(["--config", str(CONFIG_DIR / "afhq.yaml"), "--data.data_dir", str(tmp_path / "x"),
                         "--data.download", "false"]) == 1
    assert capsys.readouterr().err.startswith("error: AFHQ not found")
