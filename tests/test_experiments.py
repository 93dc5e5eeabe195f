"""The experiment scripts run end to end on tiny data and write their tables and plots."""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from experiments import runner
from neurosql_pl.run_folder import read_yaml
from tests.helpers.cli_args import REPO
from tests.helpers.network import block_network


def load_script(name: str):
    """The script experiments/<name>.py as the module ``experiments.<name>``."""
    return importlib.import_module(f"experiments.{name}")


def test_scaling_writes_csv_plot_and_table_with_one_row_per_model_and_size(tiny_mnist: Path, tmp_path: Path) -> None:
    scaling = load_script("scaling")
    out = tmp_path / "scaling"
    scaling.run(scaling.build_parser().parse_args(
        ["--out", str(out), "--data-dir", str(tiny_mnist), "--sizes", "32", "64", "--blocks", "16", "--epochs", "2"]))
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
    assert [r["seeds"] for r in rows] == [2, 2, 2, 1, None]  # seeds 0 and 1; the DDPM seed 0 only
    for row in rows[:4]:
        assert row["epochs"] == 1 and row["train_time_s"] > 0
        assert math.isfinite(row["fid"]) and row["fid"] >= 0 and 0 <= row["coverage"] <= 1
        assert row["pixel_syn_to_train"] > 0 and row["pixel_train_to_syn"] > 0
    assert rows[0]["recon_mse"] is not None and rows[2]["recon_mse"] is None  # NeuroSQL reconstructs, the GAN not
    csv_rows = list(csv.DictReader(open(out / "compare.csv")))
    per_seed = [r for r in csv_rows if r["seed"] in ("0", "1")]
    assert [(r["model"], r["seed"]) for r in per_seed] == [
        ("NeuroSQL", "0"), ("NeuroSQL", "1"), ("VAE", "0"), ("VAE", "1"), ("GAN", "0"), ("GAN", "1"), ("DDPM", "0")]
    fids = [float(r["fid"]) for r in per_seed[:2]]
    assert fids[0] != fids[1]  # the seeds train different models
    assert float(csv_rows[7]["fid"]) == pytest.approx(sum(fids) / 2) and rows[0]["fid_range"] == (
        f"{min(fids):.1f}–{max(fids):.1f}")
    assert [r["model"] for r in csv_rows[7:]] == [r["model"] for r in rows]
    table = (out / "compare.md").read_text()
    assert "1 epochs per model, training seeds 0, 1, mean over seeds (DDPM: seed 0 only)" in table
    assert table.count("\n| ") == 6  # header + 5 rows
    grid = Image.open(out / "compare.png")
    assert grid.width > 4 * grid.height  # five panels side by side

    stamps = {str(d.relative_to(out)): (d / "eval.json").stat().st_mtime_ns for d in out.glob("*/seed*")}
    assert set(stamps) == {"neurosql/seed0", "neurosql/seed1", "vae/seed0", "vae/seed1", "gan/seed0", "gan/seed1",
                           "ddpm/seed0"}
    capsys.readouterr()
    again = compare.run(compare.build_parser().parse_args(argv))  # finished models are reused, not retrained
    assert capsys.readouterr().out.count("reusing") == 7
    assert [r["fid"] for r in again] == [r["fid"] for r in rows]
    assert stamps == {str(d.relative_to(out)): (d / "eval.json").stat().st_mtime_ns for d in out.glob("*/seed*")}


def test_compare_time_budget_stops_training_and_unfinished_runs_are_kept(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    compare = load_script("compare")
    out = tmp_path / "compare"
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--models", "NeuroSQL", "--minutes", "0.02",
            "--max-epochs", "100000", "--n", "16", "--features", "random-conv", "--block-size", "16", "--seeds", "3",
            "--", "--data.batch_size", "16"]
    (row, _) = compare.run(compare.build_parser().parse_args(argv))
    assert 1 <= row["epochs"] < 100000 and row["train_time_s"] < 30  # 1.2 s of training, then stopped
    assert "0.02 min of training per model (capped at 100000 epochs), training seed 3;" in (out / "compare.md").read_text()
    assert (out / "neurosql" / "seed3" / "eval.json").is_file()

    unfinished = out / "vae" / "seed3"
    unfinished.mkdir(parents=True)
    (unfinished / "notes.txt").write_text("mine")
    with pytest.raises(runner.ExperimentError, match="unfinished run.*--force"):
        compare.run(compare.build_parser().parse_args([*argv[:5], "VAE", *argv[6:]]))
    assert (unfinished / "notes.txt").read_text() == "mine"
    with pytest.raises(runner.ExperimentError, match="unknown model"):
        compare.run(compare.build_parser().parse_args([*argv[:5], "Flow", *argv[6:]]))


def fewshot_argv(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """make fewshot on tiny data: batches of 16, 12 samples scored per point, random-conv features."""
    return ["--data-dir", str(data_dir), "--out", str(out), "--batch-size", "16", "--n", "12", "--n-curve", "12",
            "--features", "random-conv", *extra]


def test_fewshot_budget_splits_into_snapshot_epochs_and_one_seed_above_the_limit() -> None:
    fewshot = load_script("fewshot")
    assert fewshot.epochs_for(100, 500, 128) == 640 and fewshot.epochs_for(5000, 500, 128) == 13
    assert fewshot.epochs_for(60000, 1, 128) == 1
    assert fewshot.snapshot_epochs(640, [0.25, 0.5]) == [160, 320]
    assert fewshot.snapshot_epochs(2, [0.25, 0.5]) == [1] and fewshot.snapshot_epochs(1, [0.25, 0.5]) == []
    args = fewshot.build_parser().parse_args([])
    assert [fewshot.seeds_at(n, args) for n in (100, 1000, 5000)] == [[0, 1], [0, 1], [0]]
    for name, epochs, snapshots in (("d6", "256", "[64, 128]"), ("d6q", "64", "[16, 32]")):  # d6q: a quarter
        flags = fewshot.fit_settings(name, 500, 0, args)[1]
        assert flags[flags.index("--trainer.max_epochs") + 1] == epochs
        assert flags[flags.index("--trainer.callbacks.at_epochs") + 1] == snapshots


def test_fewshot_every_variant_names_options_its_model_has() -> None:
    """The table of variants (the levers of issue 15 among them) stays in step with the models:
    each flag is an option of its model and every variant's settings build it, so no run of hours
    fails at its first fit."""
    fewshot = load_script("fewshot")
    args = fewshot.build_parser().parse_args([])
    for name in fewshot.VARIANTS:
        runner.check_model_flags(*fewshot.fit_settings(name, 100, 0, args))
    assert set(fewshot.expand(["levers"])) >= {"NeuroSQL", "oversample", "noise", "stlpips", "rho05", "d8", "trunc2"}
    with pytest.raises(runner.ExperimentError, match="no option.*--model.no_such_lever"):
        runner.check_model_flags("neurosql", ["--model.latent_dim", "8", "--model.no_such_lever", "1"])
    with pytest.raises(runner.ExperimentError, match="does not build: .*code_noise"):
        runner.check_model_flags("neurosql", ["--model.code_noise=0.1"])  # needs --model.cost_outputs fresh
    assert runner.model_flag_values(["--model.latent_dim", "8", "--data.subset", "5", "--model.oversample=auto"]) \
        == {"latent_dim": 8, "oversample": "auto"}


def test_fewshot_contest_runs_every_model_size_and_seed_with_curves_and_mean_over_seeds(
        tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    fewshot = load_script("fewshot")
    out = tmp_path / "fewshot"
    # 4 steps of 16 images: N = 16 trains 4 epochs, N = 32 trains 2; a snapshot at half of each
    argv = fewshot_argv(tiny_mnist, out, "--sizes", "16", "32", "--steps", "4", "--one-seed-above", "16",
                        "--models", "NeuroSQL", "VAE", "--curve", "0.5")
    means = fewshot.run(fewshot.build_parser().parse_args(argv))
    runs = {(m, n, s) for m in ("neurosql", "vae") for n, s in ((16, 0), (16, 1), (32, 0))}
    assert {(d.parts[-2], int(d.parts[-3][1:]), int(d.name[4:])) for d in out.glob("n*/*/seed*")} == runs

    rows = list(csv.DictReader(open(out / "fewshot.csv")))
    per_seed = [r for r in rows if r["seed"] in ("0", "1")]
    assert {(r["run"].lower(), int(r["N"]), int(r["seed"])) for r in per_seed} == runs
    for name in ("NeuroSQL", "VAE"):
        seeds = [r for r in per_seed if r["run"] == name and r["N"] == "16"]
        fids, kids = [float(r["fid"]) for r in seeds], [1e3 * float(r["kid_mean"]) for r in seeds]
        (mean,) = [r for r in means if r["run"] == name and r["N"] == 16]
        assert mean["seeds"] == 2 and mean["fid"] == pytest.approx(sum(fids) / 2)
        assert mean["fid_range"] == f"{min(fids):.3g}–{max(fids):.3g}" and mean["kid_range"] == f"{min(kids):.3g}–{max(kids):.3g}"
        assert mean["memorisation_min"] == min(float(r["memorisation_ratio"]) for r in seeds)
        (single,) = [r for r in means if r["run"] == name and r["N"] == 32]
        assert single["seeds"] == 1 and single["fid_range"] is None
    for n in (16, 32):
        verdicts = [r.get("verdict") or "" for r in means if r["N"] == n]
        assert sum("winner" in v for v in verdicts) <= 1 and not any("winner" in v and "copies" in v for v in verdicts)
    header = next(line for line in (out / "fewshot.md").read_text().splitlines() if line.startswith("| N |"))
    for column in ("FID ↓", "FID range", "KID×10³ ↓", "KID×10³ range", "memorisation ratio (min)", "steps", "train s"):
        assert f"| {column} |" in header

    curves = list(csv.DictReader(open(out / "fewshot_curves.csv")))
    for run_dir in out.glob("n*/*/seed*"):
        snapshots = json.loads((run_dir / "snapshots.json").read_text())["snapshots"]
        mine = [r for r in curves if (r["run"].lower(), r["N"], r["seed"]) == (run_dir.parts[-2], run_dir.parts[-3][1:], run_dir.name[4:])]
        assert [r["point"] for r in mine] == [s["name"] for s in snapshots] + ["end"]
        assert len(mine) == 2 and [int(r["epochs"]) for r in mine] == ([2, 4] if run_dir.parts[-3] == "n16" else [1, 2])
        steps = [int(r["steps"]) for r in mine]
        assert steps == sorted(set(steps)) and steps == [2, 4]  # half the budget, then all of it: 4 steps
    assert Image.open(out / "fewshot_curves.png").width > Image.open(out / "fewshot_curves.png").height  # a column per N
    assert Image.open(out / "fewshot.png").width > 0 and Image.open(out / "fewshot_samples.png").width > 0

    stamps = {d: (d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in out.glob("n*/*/seed*")}
    evals = sorted(out.glob("n*/*/seed*/eval_*.json"))
    again = fewshot.run(fewshot.build_parser().parse_args(argv))  # finished runs are reused, scores too
    assert [r["fid"] for r in again] == [r["fid"] for r in means]
    assert stamps == {d: (d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in out.glob("n*/*/seed*")}
    assert sorted(out.glob("n*/*/seed*/eval_*.json")) == evals
    with pytest.raises(runner.ExperimentError, match="trained for 4 epochs, this budget is 8"):
        fewshot.run(fewshot.build_parser().parse_args([*argv, "--steps", "8"]))


def test_fewshot_variant_flags_reach_the_fit_and_truncation_scores_the_shared_run(
        tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    fewshot = load_script("fewshot")
    out = tmp_path / "fewshot"
    argv = fewshot_argv(tiny_mnist, out, "--sizes", "16", "--steps", "2", "--seeds", "3", "--curve", "--models",
                        "--variants", "default", "d8", "trunc2")
    means = fewshot.run(fewshot.build_parser().parse_args(argv))
    assert [r["run"] for r in means] == ["NeuroSQL", "d8", "trunc2", fewshot.REAL]
    d8, plain = (read_yaml(out / "n16" / name / "seed3" / "config.yaml") for name in ("d8", "neurosql"))
    assert d8["model"]["init_args"]["latent_dim"] == 8 and plain["model"]["init_args"]["latent_dim"] == "auto"
    assert d8["seed_everything"] == 3 and d8["data"]["init_args"]["subset"] == 16 and d8["trainer"]["max_epochs"] == 2
    assert not (out / "n16" / "trunc2").exists()  # trunc2 scores NeuroSQL's run with truncated codes
    report = json.loads((out / "n16" / "neurosql" / "seed3" / "eval_end_n12_truncation2.json").read_text())
    assert report["settings"]["truncation"] == 2.0
    monkeypatch.setitem(fewshot.VARIANTS, "bad", fewshot.Variant("no such lever", flags=("--model.no_such_lever", "1")))
    with pytest.raises(runner.ExperimentError, match="no option.*--model.no_such_lever"):
        fewshot.run(fewshot.build_parser().parse_args([*argv, "bad"]))
    assert not (out / "n16" / "bad").exists()  # refused before any training
    with pytest.raises(runner.ExperimentError, match="unknown run"):
        fewshot.run(fewshot.build_parser().parse_args([*argv, "nope"]))


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


@pytest.mark.parametrize("script", ["ablate", "compare", "fewshot"])
def test_data_dir_defaults_to_the_data_pieces_own_folder(script: str) -> None:
    """Without --data-dir a script reads the dataset where its data piece (and `make data`) puts it:
    data/emoji3d for Emoji3D, not data/ (which holds no Emoji3D set-up)."""
    seen: list[argparse.Namespace] = []
    build = load_script(script).build_parser
    for argv, want in ((["--data", "emoji3d"], "data/emoji3d"), (["--data", "mnist"], "data"),
                       (["--data", "emoji3d", "--data-dir", "elsewhere"], "elsewhere")):
        runner.script_main(build, seen.append, argv)
        assert seen[-1].data_dir == want
    with pytest.raises(SystemExit, match="unknown --data nope; choose one of: .*emoji3d"):
        runner.script_main(build, seen.append, ["--data", "nope"])


def test_ablate_scores_snapshots_along_training_and_reuses_finished_runs(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    fast_eval(monkeypatch, tmp_path)
    ablate = load_script("ablate")
    out = tmp_path / "ablate"
    # a snapshot after every epoch (every 0.006 s of training), 2 epochs: snap1, end (snap2 is the end)
    argv = ["--data-dir", str(tiny_mnist), "--out", str(out), "--configs", "base", "vae", "--subset", "0",  # all 64
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
    assert "all training images" in table and "memorisation ratio" in table
    assert len({line.count("|") for line in table.splitlines() if line.startswith("|")}) == 1  # cells line up
    assert read_yaml(out / "base" / "seed0" / "config.yaml")["data"]["init_args"]["subset"] is None  # 0 = all
    assert Image.open(out / "ablate.png").size[0] > 0
    last = out / "base" / "seed0" / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns
    again = ablate.run(ablate.build_parser().parse_args(argv))  # finished and scored: nothing retrains
    assert last.stat().st_mtime_ns == stamp
    assert [r["fid"] for r in again] == [r["fid"] for r in rows]
    table = (out / "ablate.md").read_text()  # rewritten, with this run's (shorter) time
    again = ablate.run(ablate.build_parser().parse_args([*argv[:argv.index("--")], "--table", "again", "--", *argv[argv.index("--") + 1:]]))
    assert (out / "again.md").is_file() and (out / "ablate.md").read_text() == table  # --table: own files
    seed_dir = out / "base" / "seed0"
    at = argv.index("--n") + 1
    fewer = ablate.run(ablate.build_parser().parse_args([*argv[:at], "8", *argv[at + 1:]]))  # scored anew, 8 samples
    assert json.loads((seed_dir / "eval.json").read_text())["settings"]["n_samples"] == 8
    kept = seed_dir / "eval.n16_random-conv_seed0.json"  # the earlier score is kept, not overwritten
    assert json.loads(kept.read_text())["metrics"]["fid"] == rows[1]["fid"]
    assert (seed_dir / "eval_snap1.n16_random-conv_seed0.json").is_file()
    assert [r["fid"] for r in fewer] != [r["fid"] for r in rows]
    stamp = kept.stat().st_mtime_ns
    back = ablate.run(ablate.build_parser().parse_args(argv))  # --n 16 again: the kept reports, not a rescore
    assert [r["fid"] for r in back] == [r["fid"] for r in rows] and kept.stat().st_mtime_ns == stamp
    with pytest.raises(runner.ExperimentError, match="unknown configuration"):
        ablate.run(ablate.build_parser().parse_args(["--configs", "nope", "--out", str(out)]))


def model_settings(config: str) -> dict[str, Any]:
    """The settings a model piece gives its class: the constructor's defaults, then the piece's keys."""
    model = read_yaml(runner.CONFIGS / "model" / f"{config}.yaml")["model"]
    module, _, name = model["class_path"].rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module), name).__init__)
    defaults = {key: p.default for key, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **(model.get("init_args") or {})}


def learning_rate_runs(script: str) -> list[tuple[str, list[str]]]:
    """(model piece, flags) of every run in the script's "lr" group, but ablate's reference line."""
    module = load_script(script)
    if script == "ablate":
        return [(config, flags) for _, config, flags in map(module.CONFIGS.get, module.expand_configs(["lr"]))
                if config != "neurosql_mse"]
    variants = [module.VARIANTS[name] for name in module.expand(["lr"])]
    return [(runner.MODELS[v.model][0], list(v.flags)) for v in variants]


@pytest.mark.parametrize("script", ["ablate", "fewshot"])
def test_learning_rate_group_gives_every_model_three_rates_around_its_own(script: str) -> None:
    """Each model of the lr group (NeuroSQL's default, VAE, GAN) gets at least three learning
    rates, its config's own among them and one on either side (a tuned setting is one that was
    measured, and not at the edge of the sweep); the GAN's two rates move together."""
    per_model: dict[str, set[float]] = {}
    for config, flags in learning_rate_runs(script):
        own = model_settings(config)
        values = {f: flags[i + 1] for i, f in enumerate(flags) if f.startswith("--model.lr")}
        assert len(set(values.values())) <= 1, flags  # lr_g = lr_d
        lr = float(next(iter(values.values()))) if values else float(own.get("lr", own.get("lr_g")))
        per_model.setdefault(config, set()).add(lr)
    assert set(per_model) == {"neurosql", "vae", "gan"}
    for config, lrs in per_model.items():
        own = model_settings(config)
        own_lr = float(own.get("lr", own.get("lr_g")))
        assert len(lrs) >= 3 and own_lr in lrs and min(lrs) < own_lr < max(lrs), (config, sorted(lrs))
    ablate = load_script("ablate")
    assert ablate.expand_configs(["base", "lr", "base"]) == ablate.expand_configs(["lr"])  # each once, in order
    assert not any("_lr" in slug for slug in ablate.expand_configs(ablate.DEFAULT_CONFIGS))
