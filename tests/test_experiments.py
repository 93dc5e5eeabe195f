"""The experiment scripts run end to end on tiny data and write their tables and plots."""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

from conftest import REPO


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_writes_csv_plot_and_table_with_one_row_per_model_and_size(tiny_mnist: Path, tmp_path: Path) -> None:
    scaling = load_script("scaling")
    out = tmp_path / "scaling"
    scaling.run(argparse.Namespace(out=str(out), data_dir=str(tiny_mnist), sizes=[32, 64], blocks=[16], epochs=2))
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert {(r["label"], int(r["N"])) for r in rows} == {
        (label, n) for label in ("VAE", "GAN", "NeuroSQL m=16") for n in (32, 64)
    }
    assert all(float(r["epoch_time_s"]) > 0 for r in rows)
    assert (out / "scaling.png").stat().st_size > 0
    assert "log-log slope" in (out / "scaling.md").read_text()
