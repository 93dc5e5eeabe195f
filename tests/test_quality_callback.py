"""SampleQuality: val/fid and val/kid logged every k epochs during training (history in
quality.json, last values in metrics.json), the best checkpoint kept by val/kid, the history
carried through a resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from neurosql_pl.cli import main
from neurosql_pl.quality_callback import SampleQuality
from tests.helpers.cli_args import tiny_fit_args


def quality_args(tiny_mnist: Path, tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return tiny_fit_args(
        tiny_mnist, run, tmp_path / "lattices", "--trainer.logger", "false", "--model.perceptual", "null",
        "--trainer.callbacks+=neurosql_pl.quality_callback.SampleQuality", "--trainer.callbacks.n", "8",
        "--trainer.callbacks.features", "random-conv", "--trainer.callbacks.cache_dir", str(tmp_path / "stats"),
        *extra,
    )


def test_fid_and_kid_are_logged_every_epoch_and_the_best_by_kid_is_kept(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(quality_args(tiny_mnist, tmp_path, run, "--trainer.max_epochs", "3",
                      "--checkpoint.monitor", "val/kid", "--checkpoint.mode", "min"))
    history = json.loads((run / "quality.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and [h["step"] for h in history] == [4, 8, 12]
    assert all(math.isfinite(h["fid"]) and h["fid"] >= 0 and math.isfinite(h["kid"]) for h in history)
    logged = json.loads((run / "metrics.json").read_text())["logged"]
    assert logged["val/fid"] == pytest.approx(history[-1]["fid"]) and logged["val/kid"] == pytest.approx(history[-1]["kid"])
    best = min(history, key=lambda h: h["kid"])
    kept = [p.name for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert kept == [f"epoch={best['epoch']}-step={best['step']}.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12


def test_every_n_epochs_and_the_last_epoch(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(quality_args(tiny_mnist, tmp_path, run, "--trainer.max_epochs", "3", "--trainer.callbacks.every_n_epochs", "2"))
    history = json.loads((run / "quality.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 2 of every 2, then the last one
    resumed = tmp_path / "run"
    main(quality_args(tiny_mnist, tmp_path, resumed, "--trainer.max_epochs", "4", "--trainer.callbacks.every_n_epochs", "2",
                      "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    again = json.loads((run / "quality.json").read_text())["history"]
    assert [h["epoch"] for h in again] == [1, 2, 3]  # the history came back with the checkpoint


@pytest.mark.parametrize(("kwargs", "message"), [({"every_n_epochs": 0}, "every_n_epochs must be ≥ 1"),
                                                  ({"n": 2}, "n must be ≥ 4")])
def test_impossible_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SampleQuality(**kwargs)
