"""The experiment scripts run end to end on tiny data and write their tables and plots."""

from __future__ import annotations

import argparse
import csv
import importlib
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments import runner
from tests.helpers.cli_args import REPO
from tests.helpers.network import block_network


def load_script(name: str):
    """The script experiments/<name>.py as the module ``experiments.<name>``."""
    return importlib.import_module(f"experiments.{name}")


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


def fast_eval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Caches (lattices, real-image statistics) under tmp_path; the runs stay offline."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    block_network(monkeypatch)


def test_compare_trains_scores_and_reuses_every_model(tiny_mnist: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    fast_eval(monkeypatch, tmp_path)
    compare = load_script("compare")
    out = tmp_path / "compare"
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--budget", "epochs", "--max-epochs", "1",
            "--n", "16", "--features", "random-conv", "--block-size", "16", "--", "--data.batch_size", "16"]
    rows = compare.run(compare.build_parser().parse_args(argv))
    assert [r["model"] for r in rows] == ["NeuroSQL", "VAE", "GAN", "DDPM", "real data (train vs held-out)"]
    for row in rows[:4]:
        assert row["epochs"] == 1 and row["train_time_s"] > 0
        assert math.isfinite(row["fid"]) and row["fid"] >= 0 and 0 <= row["coverage"] <= 1
        assert row["pixel_syn_to_train"] > 0 and row["pixel_train_to_syn"] > 0
    assert rows[0]["recon_mse"] is not None and rows[2]["recon_mse"] is None  # NeuroSQL reconstructs, the GAN not
    csv_rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [r["model"] for r in csv_rows] == [r["model"] for r in rows]
    table = (out / "compare.md").read_text()
    assert "1 epochs per model" in table and table.count("\n| ") == 6  # header + 5 rows
    grid = Image.open(out / "compare.png")
    assert grid.width > 4 * grid.height  # five panels side by side

    stamps = {d.name: (d / "eval.json").stat().st_mtime_ns for d in out.iterdir() if d.is_dir()}
    assert set(stamps) == {"neurosql", "vae", "gan", "ddpm"}
    capsys.readouterr()
    again = compare.run(compare.build_parser().parse_args(argv))  # finished models are reused, not retrained
    assert capsys.readouterr().out.count("reusing") == 4
    assert [r["fid"] for r in again] == [r["fid"] for r in rows]
    assert stamps == {d.name: (d / "eval.json").stat().st_mtime_ns for d in out.iterdir() if d.is_dir()}


def test_compare_time_budget_stops_training_and_unfinished_runs_are_kept(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    compare = load_script("compare")
    out = tmp_path / "compare"
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--models", "NeuroSQL", "--minutes", "0.02",
            "--max-epochs", "100000", "--n", "16", "--features", "random-conv", "--block-size", "16", "--", "--data.batch_size", "16"]
    (row, _) = compare.run(compare.build_parser().parse_args(argv))
    assert 1 <= row["epochs"] < 100000 and row["train_time_s"] < 30  # 1.2 s of training, then stopped
    assert "0.02 min of training per model" in (out / "compare.md").read_text()

    unfinished = out / "vae"
    unfinished.mkdir()
    (unfinished / "notes.txt").write_text("mine")
    with pytest.raises(runner.ExperimentError, match="unfinished run.*--force"):
        compare.run(compare.build_parser().parse_args([*argv[:5], "VAE", *argv[6:]]))
    assert (unfinished / "notes.txt").read_text() == "mine"
    with pytest.raises(runner.ExperimentError, match="unknown model"):
        compare.run(compare.build_parser().parse_args([*argv[:5], "Flow", *argv[6:]]))


def test_fewshot_matches_images_seen_per_model_and_writes_tables(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    fewshot = load_script("fewshot")
    assert fewshot.epochs_for(100, 500, 128) == 640 and fewshot.epochs_for(5000, 500, 128) == 13
    assert fewshot.epochs_for(60000, 1, 128) == 1
    out = tmp_path / "fewshot"
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--sizes", "16", "32", "--models", "NeuroSQL", "VAE",
            "--steps", "2", "--batch-size", "16", "--n", "12", "--features", "random-conv"]
    rows = fewshot.run(fewshot.build_parser().parse_args(argv))  # NeuroSQL's m = min(256, N)
    models = [r for r in rows if not r["model"].startswith("real")]
    assert {(r["N"], r["model"]) for r in models} == {(n, m) for n in (16, 32) for m in ("NeuroSQL", "VAE")}
    assert {(r["N"], r["epochs"]) for r in models} == {(16, 2), (32, 1)}
    assert all(math.isfinite(r["fid"]) and r["pixel_syn_to_train"] > 0 for r in models)
    assert len(list(csv.DictReader(open(out / "fewshot.csv")))) == 6  # 4 runs + the real data at each N
    text = (out / "fewshot.md").read_text()
    assert "| NeuroSQL |" in text and "N=32" in text and "Memorisation" in text
    assert Image.open(out / "fewshot.png").width > 0 and Image.open(out / "fewshot_samples.png").width > 0


def test_latent2d_codes_are_the_lattice_and_summary_is_sane(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    latent2d = load_script("latent2d")
    out = tmp_path / "latent2d"
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--subset", "64", "--epochs", "1"]
    summary = latent2d.run(latent2d.build_parser().parse_args([*argv, "--", "--data.batch_size", "16"]))
    assert [s["model"] for s in summary] == ["NeuroSQL", "VAE"] and all(s["N"] == 64 for s in summary)
    points = list(csv.DictReader(open(out / "latent2d.csv")))
    assert len(points) == 128 and {p["model"] for p in points} == {"NeuroSQL", "VAE"}
    # rho = 1: NeuroSQL's codes are the 2-D lattice itself, permuted
    model, _ = latent2d.trained("NeuroSQL", latent2d.build_parser().parse_args(argv), out / "neurosql")
    codes = torch.tensor([[float(p["z1"]), float(p["z2"])] for p in points if p["model"] == "NeuroSQL"])
    assert torch.allclose(codes, model.lattice[model.assignment], atol=1e-6)
    assert sorted(model.assignment.tolist()) == list(range(64))
    assert all(0 <= s["knn10_accuracy"] <= 1 and s["recon_mse"] > 0 for s in summary)
    assert "10-NN digit accuracy" in (out / "latent2d.md").read_text()
    image = Image.open(out / "latent2d.png")
    assert min(image.size) > 500  # two rows of two panels


def test_knn_accuracy_separates_clusters_and_not_noise(tmp_path: Path) -> None:
    latent2d = load_script("latent2d")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(50)
    centres = 10 * torch.randn(10, 2, generator=g)
    assert latent2d.knn_accuracy(centres[labels] + 0.1 * torch.randn(500, 2, generator=g), labels) == 1.0
    assert latent2d.knn_accuracy(torch.randn(500, 2, generator=g), labels) < 0.3


@pytest.mark.parametrize("name", ["compare", "fewshot", "latent2d", "scaling"])
def test_gpu_sized_argument_files_parse(name: str) -> None:
    script = load_script(name)
    args_file = REPO / "experiments" / "gpu" / f"{name}.args"
    parser = script.build_parser() if hasattr(script, "build_parser") else None
    assert parser is not None, f"experiments/{name}.py has no build_parser()"
    args = parser.parse_args([f"@{args_file}"])
    defaults = parser.parse_args([])
    assert vars(args) != vars(defaults)  # the file changes the CPU-sized defaults


def test_ablate_scores_snapshots_along_training_and_reuses_finished_runs(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    ablate = load_script("ablate")
    out = tmp_path / "ablate"
    # a snapshot after every epoch (every 0.006 s of training), 2 epochs: snap1, end (snap2 is the end)
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--configs", "base", "vae", "--subset", "64",
            "--minutes", "10", "--every-minutes", "0.0001", "--max-epochs", "2", "--n", "16",
            "--features", "random-conv", "--", "--data.batch_size", "16"]
    rows = ablate.run(ablate.build_parser().parse_args(argv))
    for config in ("base", "vae"):
        mine = [r for r in rows if r["config"] == config]
        assert [r["point"] for r in mine] == ["snap1", "end"]
        assert [r["epochs"] for r in mine] == [1, 2]
        times = [r["train_s"] for r in mine]
        assert 0 < times[0] < times[1]  # training seconds grow along the run
        assert all(math.isfinite(r["fid"]) and r["fid"] >= 0 for r in mine)
        assert (out / config / "seed0" / "eval_snap1.json").is_file()
    assert len(list(csv.DictReader(open(out / "ablate.csv")))) == 4
    table = (out / "ablate.md").read_text()
    assert "| base |" in table and "| vae |" in table and "| real data |" in table
    assert Image.open(out / "ablate.png").size[0] > 0
    last = out / "base" / "seed0" / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns
    again = ablate.run(ablate.build_parser().parse_args(argv))  # finished and scored: nothing retrains
    assert last.stat().st_mtime_ns == stamp
    assert [r["fid"] for r in again] == [r["fid"] for r in rows]
    with pytest.raises(runner.ExperimentError, match="unknown configuration"):
        ablate.run(ablate.build_parser().parse_args(["--configs", "nope", "--out", str(out)]))
