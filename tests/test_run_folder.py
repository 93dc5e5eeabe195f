"""Reading a run folder back (neurosql_pl.run_folder): metrics.json, data sections and the one
builder of `{class_path, init_args}` sections. Checkpoints and models are read end to end in
test_evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurosql_pl.run_folder import (
    EvaluationError,
    data_config_section,
    data_section,
    epoch_times,
    instantiate,
    last_checkpoint,
    run_dir_of,
    train_metrics,
    training_times,
)


def test_training_times(tmp_path):
    assert training_times(tmp_path) == {"epoch_time_s": None, "total_time_s": None, "epochs": None}
    (tmp_path / "metrics.json").write_text(json.dumps({"epoch_time_s": 22.3, "total_time_s": 344.0, "epochs": 15}))
    assert training_times(tmp_path) == {"epoch_time_s": 22.3, "total_time_s": 344.0, "epochs": 15}
    (tmp_path / "metrics.json").write_text("{broken")
    assert training_times(Path(tmp_path))["total_time_s"] is None


def test_train_metrics_and_epoch_times(tmp_path):
    assert train_metrics(tmp_path) == {} and epoch_times(tmp_path) == []
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": 3, "epoch_times_s": [1.5, 2, None, "x"]}))
    assert train_metrics(tmp_path)["epochs"] == 3
    assert epoch_times(tmp_path) == [1.5, 2.0]
    (tmp_path / "metrics.json").write_text("[1, 2]")  # JSON, but not an object
    assert train_metrics(tmp_path) == {} and epoch_times(tmp_path) == []


def test_run_dir_of_a_checkpoint(tmp_path):
    assert run_dir_of(last_checkpoint(tmp_path)) == tmp_path.resolve()
    assert run_dir_of(tmp_path / "lone.ckpt") == tmp_path.resolve()


def test_data_sections_and_the_builder(tmp_path):
    section = {"class_path": "collections.OrderedDict", "init_args": {"a": 1, "b": 2}}
    piece, bare = tmp_path / "piece.yaml", tmp_path / "bare.yaml"
    piece.write_text(json.dumps({"data": section}))  # JSON is YAML
    bare.write_text(json.dumps(section))
    assert data_config_section(piece) == data_config_section(bare) == section
    assert data_section(piece) == (section, str(piece))
    assert data_section(None, {"data": section}) == (section, "run config.yaml")
    from_hparams = {"datamodule_hyper_parameters": {"_class_path": "collections.OrderedDict", "a": 1, "_x": 0}}
    assert data_section(None, None, from_hparams) == (
        {"class_path": "collections.OrderedDict", "init_args": {"a": 1}}, "checkpoint datamodule hyper-parameters")
    assert instantiate(section, {"b": 3}) == {"a": 1, "b": 3}
    with pytest.raises(EvaluationError, match="no data configuration.*--data-config"):
        data_section()
    (tmp_path / "model.yaml").write_text("model: {class_path: x.Y}")
    with pytest.raises(EvaluationError, match="has no 'data: "):
        data_config_section(tmp_path / "model.yaml")
    with pytest.raises(EvaluationError, match="cannot import 'collections.Nope'"):
        instantiate({"class_path": "collections.Nope"})
    with pytest.raises(EvaluationError, match="not of the form"):
        instantiate({"class_path": "Nope"})
