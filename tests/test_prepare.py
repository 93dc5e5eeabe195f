"""The data configs (experiments/configs/data) and `neurosql-prepare` /
`python -m neurosql_pl.datamodules.prepare`: every config builds its datamodule, and the
command says whether the data is ready."""

from __future__ import annotations

import pytest

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
    with pytest.raises(SystemExit) as info:
        prepare_main(["imagenet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown data config 'imagenet'" in err and "celeba" in err and "folder" in err


def test_prepare_cli_ready_and_missing_data(tmp_path, capsys):
    folder = write_image_folder(tmp_path, 3)
    assert prepare_main(["folder", "--data.data_dir", str(folder), "--data.image_size=8"]) == 0
    assert "data ready" in capsys.readouterr().out
    assert prepare_main(["celeba", "--data.data_dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "DatasetNotFoundError" in err and "list_eval_partition.txt" in err
    assert prepare_main(["--config", str(CONFIG_DIR / "afhq.yaml"), "--data.data_dir", str(tmp_path / "x"), "--data.download", "false"]) == 1
    assert "afhq" in capsys.readouterr().err
