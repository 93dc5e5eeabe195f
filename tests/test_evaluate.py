"""End to end: `python -m neurosql_pl.evaluate` on a tiny NeuroSQL run (tiny MNIST files, trained
in-process), mostly with the small random-conv feature extractor and once with the real
TF-Inception; plus its command-line spellings and error messages."""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli_args import CONFIGS, tiny_fit_args
from tests.helpers.idx_files import write_mnist_idx
from neurosql_pl import evaluate as E
from neurosql_pl.cli import main as cli_main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_run")
    data = root / "data"
    write_mnist_idx(data, n_train=64, n_test=16)
    run = root / "run"
    cli_main(tiny_fit_args(data, run, root / "lattices", "--trainer.logger", "false", "--model.perceptual", "null"))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "metrics.json").is_file()
    return {"root": root, "data": data, "run": run, "ckpt": ckpt}


def _check_report(report: dict) -> None:
    metrics = report["metrics"]
    assert set(metrics) == set(E.METRIC_KEYS)
    for key, value in metrics.items():
        if key == "memorisation_flag":
            assert isinstance(value, bool)
        else:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), key
            assert math.isfinite(value), key
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["coverage"] <= 1
    assert metrics["train_epochs"] == 2 and metrics["train_total_time_s"] > 0


def test_evaluate_end_to_end(tiny_run, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["--ckpt", str(tiny_run["ckpt"]), "--n", "16", "--features", "random-conv",
            "--cache-dir", str(cache), "--kid-subsets", "10"]
    assert E.main(args) == 0
    printed = capsys.readouterr().out
    assert "| FID |" in printed and "not meaningful" in printed
    eval_json = tiny_run["run"] / "eval.json"  # default: next to the checkpoint's run folder
    report = json.loads(eval_json.read_text())
    _check_report(report)
    assert report["model_class"] == "neurosql_pl.NeuroSQL"
    assert report["settings"]["n_samples"] == 16 and report["settings"]["n_train_reference"] == 64
    assert report["settings"]["kid_subset_size"] == 8  # default: half of N
    assert report["timing"]["real_stats_from_cache"] == {"test": False, "train": False}
    assert not list(tiny_run["run"].glob("*.tmp"))

    # again, with the data piece of experiments/configs + --data-dir, --out: same numbers, stats from the cache
    out = tmp_path / "again" / "eval.json"
    assert E.main(args + ["--out", str(out), "--quiet", "--data-config", str(CONFIGS / "data" / "mnist.yaml"),
                          "--data-dir", str(tiny_run["data"]), "--fid-method", "eigh"]) == 0
    again = json.loads(out.read_text())
    assert again["timing"]["real_stats_from_cache"] == {"test": True, "train": True}
    assert again["data_source"].endswith("mnist.yaml") and again["settings"]["fid_method"] == "eigh"
    for key in ("fid", "kid_mean", "precision", "coverage", "pixel_syn_to_train", "recon_mse"):
        assert again["metrics"][key] == pytest.approx(report["metrics"][key], rel=1e-6), key


def test_evaluate_without_run_config_uses_checkpoint_hparams(tiny_run, tmp_path):
    """A checkpoint copied away from its run folder still knows its model and data classes."""
    lone = tmp_path / "lone.ckpt"
    shutil.copy(tiny_run["ckpt"], lone)
    report = E.evaluate(lone, n=8, features="random-conv", use_cache=False, kid_subsets=5, prdc_k=3,
                        baseline=False, log=None)
    assert report["data_source"] == "checkpoint datamodule hyper-parameters"
    assert report["metrics"]["baseline_fid"] is None and math.isfinite(report["metrics"]["fid"])
    assert report["metrics"]["train_epochs"] is None  # no metrics.json beside it
    assert Path(report["eval_json"]) == tmp_path / "eval.json"


def test_missing_and_corrupt_checkpoints_fail_clearly(tiny_run, tmp_path, capsys):
    assert E.main(["--ckpt", str(tmp_path / "nope.ckpt"), "--features", "random-conv"]) == 1
    assert capsys.readouterr().err == f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}\n"
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(tiny_run["ckpt"].read_bytes()[:5000])  # truncated
    assert E.main(["--ckpt", str(broken), "--features", "random-conv"]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    with pytest.raises(E.EvaluationError, match="n must be at least"):
        E.evaluate(tiny_run["ckpt"], n=3, features="random-conv", log=None)
    with pytest.raises(E.EvaluationError, match="MNIST not found"):
        E.evaluate(tiny_run["ckpt"], n=8, features="random-conv", data_dir=str(tmp_path / "empty"), log=None)


def test_truncated_sampling_is_scored_into_its_own_file(tiny_run):
    """--truncation t: eval_truncation<t>.json beside the run's eval.json, which stays as it was;
    the setting is recorded; an impossible threshold is refused before anything is loaded."""
    plain = tiny_run["run"] / "eval.json"
    before = plain.read_bytes() if plain.is_file() else None
    report = E.evaluate(tiny_run["ckpt"], n=8, features="random-conv", use_cache=False, kid_subsets=5, prdc_k=3,
                        truncation=1.0, log=None)
    assert report["eval_json"] == str(tiny_run["run"] / "eval_truncation1.json")
    assert report["settings"]["truncation"] == 1.0
    assert (plain.read_bytes() if plain.is_file() else None) == before
    with pytest.raises(E.EvaluationError, match="truncation must be"):
        E.evaluate(tiny_run["ckpt"], n=8, features="random-conv", truncation=-1.0, log=None)


def test_evaluate_with_the_inception_features(tiny_run, tmp_path, capsys):
    """The real TF-Inception (8 samples, 8 held-out and 8 training images), through the command line."""
    out = tmp_path / "eval.json"
    assert E.main(["--ckpt", str(tiny_run["ckpt"]), "--n", "8", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                   "--kid-subsets", "5", "--fid-method", "eigh", "--quiet"]) == 0
    assert "not meaningful" not in capsys.readouterr().out
    report = json.loads(out.read_text())
    _check_report(report)
    assert report["settings"]["features"] == "inception"
    assert report["settings"]["feature_extractor_id"].startswith("tf-inception-v3")
    assert report["metrics"]["fid"] > 0 and report["metrics"]["baseline_fid"] > 0


def test_command_line_takes_the_parameters_of_evaluate_in_both_spellings():
    old = E.parse_options(["--ckpt", "a.ckpt", "--data-config", "d.yaml", "--kid-subset-size=4", "--no-cache",
                           "--no-baseline", "--fid-method", "eigh", "--features", "random-conv", "--quiet"])
    new = E.parse_options(["--ckpt", "a.ckpt", "--data_config", "d.yaml", "--kid_subset_size=4", "--use_cache", "false",
                           "--baseline", "false", "--fid_method", "eigh", "--features", "random-conv", "--quiet"])
    assert old == new
    assert new["use_cache"] is False and new["baseline"] is False and new["kid_subset_size"] == 4 and new["quiet"]
    defaults = E.parse_options(["--ckpt", "a.ckpt"])
    assert defaults["n"] == 1000 and defaults["features"] == "inception" and defaults["fid_method"] == "eigh"
    assert set(defaults) == set(inspect.signature(E.evaluate).parameters) - {"extractor", "log"} | {"quiet"}
    with pytest.raises(SystemExit) as info:
        E.parse_options(["--ckpt", "a.ckpt", "--features", "vgg"])
    assert info.value.code == 2


class _NoiseModel:
    """Stands in for a trained model: sample(n, generator) → noise images (n, 3, 8, 8) in [-1, 1]."""

    def sample(self, n: int, generator=None):
        import torch

        return torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1


def test_a_run_without_held_out_images_says_how_and_can_score_against_training_images(tmp_path):
    import torch

    from neurosql_pl.datamodules import ImageFolderDataModule
    from tests.helpers.image_files import write_image_folder

    dm = ImageFolderDataModule(data_dir=str(write_image_folder(tmp_path, 12)), image_size=8, val_fraction=0.0)
    dm.setup("fit")
    with pytest.raises(E.EvaluationError, match=r"held none out.*--data.val_fraction 0.1.*--reference train"):
        E.draw(_NoiseModel(), dm, n=4, seed=0, batch_size=4)
    drawn = E.draw(_NoiseModel(), dm, n=4, seed=0, batch_size=4, reference="train")
    every = dm.train_images(torch.arange(12)).float()
    chosen = [int((every - img).abs().flatten(1).sum(1).argmin()) for img in drawn.heldout]
    assert all(torch.equal(every[i], img) for i, img in zip(chosen, drawn.heldout))  # training images ...
    assert set(chosen).isdisjoint(drawn.train_idx.tolist()) and len(set(chosen)) == 4  # ... not the chosen ones
    assert drawn.n_heldout_total == 8


def test_scoring_against_training_images_is_labelled(tiny_run, tmp_path):
    report = E.evaluate(tiny_run["ckpt"], n=8, out=tmp_path / "eval.json", features="random-conv", use_cache=False,
                        kid_subsets=5, prdc_k=3, reference="train", log=None)
    assert report["settings"]["fid_reference"] == "training images" and report["settings"]["reference"] == "train"
    assert "**Scored against training images**" in E.format_markdown(report)
    with pytest.raises(E.EvaluationError, match="unknown reference 'test'"):
        E.evaluate(tiny_run["ckpt"], n=8, features="random-conv", reference="test", log=None)
