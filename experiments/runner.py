"""What every experiment script shares: one CLI `fit` per run, a run folder's state, snapshots
along training and their scoring, the learning-rate sweep of every model, and the CSV / markdown
writers. Imported by the scripts beside it (``python -m experiments.<name>``)."""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import sys
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml

from experiments.configs import available, config_path
from neurosql_pl.cli import NeuroSQLCLI
from neurosql_pl.cli import main as cli
from neurosql_pl.distribution_metrics import FID_METHODS
from neurosql_pl.evaluate import evaluate
from neurosql_pl.features import FEATURE_EXTRACTORS
from neurosql_pl.files import write_json_atomic
from neurosql_pl.run_folder import (
    EVAL_FILE, METRICS_FILE, EvaluationError, import_class, last_checkpoint, read_yaml, train_metrics,
)

CONFIGS = Path(__file__).resolve().parent / "configs"

#: model label → (experiments/configs/model piece, extra CLI flags) of the paper's comparison
MODELS: dict[str, tuple[str, list[str]]] = {
    "NeuroSQL": ("neurosql", []),
    "VAE": ("vae", []),
    "GAN": ("gan", []),
    "DDPM": ("ddpm", []),
}

#: model label → (its learning-rate flags, the rates tried beside its config's own): the one
#: learning-rate sweep of every experiment (ablate's and fewshot's "lr" groups), the same tuning
#: effort for every model; each list brackets the config's value (tests/test_experiments.py)
LEARNING_RATES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "NeuroSQL": (("--model.lr",), (1e-3, 4e-3)),
    "VAE": (("--model.lr",), (3e-4, 1e-3, 1e-2)),
    "GAN": (("--model.lr_g", "--model.lr_d"), (1e-4, 2e-4, 5e-4, 2e-3)),
}
SNAPSHOTS_FILE = "snapshots.json"


class ExperimentError(RuntimeError):
    """Bad experiment settings or a run folder in a state the script will not touch."""


def quiet() -> None:
    """Keep the scripts' output to their own progress lines."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """The scripts' parser: their docstring as help, ``@file`` arguments (experiments/gpu/*.args)."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, fromfile_prefix_chars="@"
    )


def add_data_args(p: argparse.ArgumentParser, experiment: str) -> None:
    """--data (a config piece), --data-dir and --out (default runs/<experiment>/<data>)."""
    p.add_argument("--data", default="mnist", help="an experiments/configs/data piece (default mnist)")
    p.add_argument("--data-dir", default=None,
                   help="the dataset's folder (default: the data piece's own, data/ for MNIST, data/emoji3d for Emoji3D)")
    p.add_argument("--out", default=None, help=f"default runs/{experiment}/<data>")


def piece_data_dir(data: str) -> str:
    """The data_dir that the experiments/configs/data piece ``data`` names ("data" when it names none)."""
    try:
        path = config_path("data", data)
    except FileNotFoundError:
        raise ExperimentError(f"unknown --data {data}; choose one of: {' '.join(available('data'))}") from None
    return str((read_yaml(path)["data"].get("init_args") or {}).get("data_dir") or "data")


def add_scoring_args(p: argparse.ArgumentParser, n: int, force_help: str, models: bool = True) -> None:
    """--models (unless ``models`` is False), --n (samples scored per run), --features, --fid-method,
    --seed (of the scoring), --force, and the extra LightningCLI flags after ``--``: the options
    every model-comparing script shares."""
    if models:
        p.add_argument("--models", nargs="+", default=list(MODELS), help=f"subset of {' '.join(MODELS)}")
    p.add_argument("--n", type=int, default=n, help="samples scored per run (and real images per set)")
    p.add_argument("--features", default="inception", choices=FEATURE_EXTRACTORS)
    p.add_argument("--fid-method", default="eigh", choices=FID_METHODS)
    p.add_argument("--seed", type=int, default=0, help="seeds the scoring: samples drawn, real images chosen")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("cli_args", nargs="*", help="after --: extra LightningCLI flags for every fit")


def check_models(models: Sequence[str]) -> None:
    """Every name must be a key of MODELS."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ExperimentError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")


def model_flag_values(flags: Sequence[str]) -> dict[str, Any]:
    """``--model.<name> <value>`` (or ``--model.<name>=<value>``) pairs of ``flags`` → {name: value},
    each value read as YAML the way LightningCLI reads it ("8" → 8, "auto" → "auto")."""
    values: dict[str, Any] = {}
    for i, flag in enumerate(flags):
        if not flag.startswith("--model."):
            continue
        name, eq, value = flag.removeprefix("--model.").partition("=")
        if not eq:
            value = flags[i + 1] if i + 1 < len(flags) else ""
        values[name] = yaml.safe_load(value)
    return values


def check_model_flags(model_config: str, flags: Sequence[str]) -> None:
    """Every ``--model.<name>`` of ``flags`` must be a parameter of the class that the model piece
    ``model_config`` names, and the piece's settings with the flags' values must build that model
    (no option that contradicts another): a misspelt, not yet built or impossible setting stops
    the script before any training."""
    piece = read_yaml(CONFIGS / "model" / f"{model_config}.yaml")["model"]
    cls = import_class(piece["class_path"])
    accepted = inspect.signature(cls.__init__).parameters
    values = model_flag_values(flags)
    unknown = [name for name in values if name.split(".")[0] not in accepted]
    if unknown:
        raise ExperimentError(f"{piece['class_path']} (model piece {model_config}) has no option(s) "
                              f"{', '.join('--model.' + u for u in unknown)}")
    if any("." in name for name in values):
        return  # nested options (--model.a.b) are LightningCLI's to check at the fit
    try:
        cls(**{**(piece.get("init_args") or {}), **values})
    except (ValueError, TypeError) as e:
        raise ExperimentError(f"model piece {model_config} with {' '.join(flags)} does not build: {e}") from e


def learning_rate_sweep(label: str) -> list[tuple[str, float, list[str]]]:
    """(tag, learning rate, CLI flags) of each rate LEARNING_RATES tries for the model ``label``
    beside its config's own; tags read like '1e-3'."""
    options, rates = LEARNING_RATES[label]
    return [(f"{lr:.0e}".replace("e-0", "e-"), lr, [x for o in options for x in (o, f"{lr:g}")]) for lr in rates]


def script_main(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], Any],
                argv: list[str] | None = None) -> None:
    """Parse argv, quieten Lightning, run; bad settings or data end with one 'error: …' line."""
    args = build_parser().parse_args(argv)
    quiet()
    try:
        if getattr(args, "data", None) is not None and getattr(args, "data_dir", "") is None:
            args.data_dir = piece_data_dir(args.data)
        run(args)
    except (ExperimentError, EvaluationError) as err:
        sys.exit(f"error: {err}")


def fit(
    model_config: str,
    run_dir: Path,
    data_config: str = "mnist",
    data_dir: str = "data",
    extra: Sequence[str] = (),
    checkpoints: bool = True,
) -> NeuroSQLCLI:
    """One LightningCLI `fit` with the project's config pieces into ``run_dir`` (replaced).

    ``checkpoints``: keep ``checkpoints/last.ckpt`` (written once, at the end of fit);
    False writes none. The W&B logger and progress bar are off; ``extra`` flags come last and win.
    Returns the CLI object (its ``model``, ``datamodule`` and ``trainer`` after training).
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    return cli([
        "fit",
        "--config", str(CONFIGS / "trainer" / "default.yaml"),
        "--config", str(CONFIGS / "model" / f"{model_config}.yaml"),
        "--config", str(CONFIGS / "data" / f"{data_config}.yaml"),
        "--data.data_dir", data_dir,
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir),
        "--checkpoint.save_last", str(checkpoints).lower(), "--checkpoint.save_top_k", "0",
        *extra,
    ])


def max_time_flags(minutes: float) -> list[str]:
    """LightningCLI flags for a wall-time budget: ``--trainer.max_time DD:HH:MM:SS``."""
    seconds = max(1, round(60 * minutes))
    return ["--trainer.max_time", f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"]


def run_state(run_dir: Path) -> str:
    """'evaluated' (eval.json), 'trained' (metrics.json + last.ckpt), 'absent', or 'partial'."""
    if (run_dir / EVAL_FILE).is_file() and (run_dir / METRICS_FILE).is_file():
        return "evaluated"
    if (run_dir / METRICS_FILE).is_file() and last_checkpoint(run_dir).is_file():
        return "trained"
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "absent"
    return "partial"


def check_can_train(run_dir: Path, force: bool) -> None:
    """Refuse to replace an interrupted run's folder unless ``force``: it may hold the only copy."""
    if run_state(run_dir) == "partial" and not force:
        raise ExperimentError(
            f"{run_dir} holds an unfinished run (no metrics.json / checkpoints/last.ckpt). "
            "Move it away, or pass --force to train it again from scratch (its files are replaced)."
        )


@dataclass(frozen=True)
class Scoring:
    """How a script scores a checkpoint with ``neurosql_pl.evaluate``: samples n (and real images
    per set), feature network, FID method, seed of the scoring, and the data folder."""

    n: int
    data_dir: str = "data"
    features: str = "inception"
    fid_method: str = "eigh"
    seed: int = 0

    @classmethod
    def of(cls, args: argparse.Namespace) -> Scoring:
        """The scoring that add_data_args and add_scoring_args' options ask for."""
        return cls(args.n, args.data_dir, args.features, args.fid_method, args.seed)


def report_settings(report: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(samples, features, seed, truncation) an eval report was made with."""
    s = report.get("settings", {})
    return s.get("n_samples"), s.get("features"), s.get("seed"), s.get("truncation")


def kept_path(path: Path, n: Any, features: Any, seed: Any, truncation: Any) -> Path:
    """Where the report of ``path`` made with these settings is kept once a report made otherwise
    takes ``path``: ``eval.json`` → ``eval.n1000_inception_seed0.json`` (``_truncation2`` added)."""
    tag = f"n{n}_{features}_seed{seed}" + ("" if truncation is None else f"_truncation{truncation:g}")
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def reusable_report(path: Path, scoring: Scoring, truncation: float | None = None) -> dict[str, Any] | None:
    """The eval report at ``path``, or kept beside it (``kept_path``), made with the same n,
    features, seed and truncation; None when there is none."""
    wanted = (scoring.n, scoring.features, scoring.seed, truncation)
    for candidate in (path, kept_path(path, *wanted)):
        if candidate.is_file():
            report = json.loads(candidate.read_text())
            if report_settings(report) == wanted:
                return report
    return None


def keep_earlier_report(path: Path) -> None:
    """Move the report at ``path`` (made with other settings) to its ``kept_path``, so that
    scoring the run another way never destroys an earlier score."""
    if path.is_file():
        path.replace(kept_path(path, *report_settings(json.loads(path.read_text()))))


def scored(ckpt: Path, out: Path, scoring: Scoring, truncation: float | None = None) -> dict[str, Any]:
    """The report of checkpoint ``ckpt`` in ``out``: reused when made the same way (there or
    kept beside it), else ``neurosql_pl.evaluate`` (silent) writes it there, an earlier report
    made otherwise being kept (``keep_earlier_report``)."""
    report = reusable_report(out, scoring, truncation)
    if report is not None:
        return report
    keep_earlier_report(out)
    return evaluate(ckpt, n=scoring.n, out=out, data_dir=scoring.data_dir, features=scoring.features,
                    fid_method=scoring.fid_method, seed=scoring.seed, truncation=truncation, log=None)


def trained_and_scored(
    label: str, run_dir: Path, train: Callable[[], Any], force: bool, n: int, data_dir: str,
    features: str = "inception", fid_method: str = "eigh", seed: int = 0,
) -> dict[str, Any]:
    """The eval.json report of ``run_dir``: reused when it was made with the same n, features and
    seed (there or kept beside it); else ``neurosql_pl.evaluate`` of ``checkpoints/last.ckpt``,
    after ``train()`` when no finished run is there (or ``force``), an earlier report made
    otherwise being kept (``keep_earlier_report``)."""
    state = "absent" if force else run_state(run_dir)
    if state == "evaluated":
        report = reusable_report(run_dir / EVAL_FILE, Scoring(n, data_dir, features, fid_method, seed))
        if report is not None:
            print(f"[{label}] reusing {run_dir / EVAL_FILE}", flush=True)
            return report
    if state not in ("trained", "evaluated"):
        print(f"[{label}] training into {run_dir}", flush=True)
        train()
    print(f"[{label}] evaluating with N={n} samples", flush=True)
    keep_earlier_report(run_dir / EVAL_FILE)
    return evaluate(
        last_checkpoint(run_dir), n=n, data_dir=data_dir, features=features, fid_method=fid_method,
        seed=seed, log=lambda msg: print(f"    {msg}", flush=True),
    )


class Snapshots(L.Callback):
    """Saves ``checkpoints/snap<k>.ckpt`` along training and lists them in ``<run>/snapshots.json``
    with their training seconds, epochs and steps (batches trained on); at the end of training the
    file gets the run's total steps too.

    When: ``every_s``: at the first epoch end after every ``every_s`` seconds of training (a
    wall-time budget, ablate); ``at_epochs``: at the end of each of these epochs, counted from 1
    (fractions of an epoch budget, fewshot). Give exactly one. Training seconds count from the
    start of training and leave out the time spent saving."""

    def __init__(self, every_s: float | None = None, at_epochs: list[int] | None = None) -> None:
        if (every_s is None) == (at_epochs is None):
            raise ValueError("give exactly one of every_s and at_epochs")
        if every_s is not None and every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        if at_epochs is not None and any(e < 1 for e in at_epochs):
            raise ValueError(f"at_epochs are counted from 1, got {at_epochs}")
        self.every_s, self.at_epochs = every_s, sorted(set(at_epochs or []))
        self._start, self._saving, self._steps, self._taken = 0.0, 0.0, 0, []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._saving, self._steps, self._taken = time.perf_counter(), 0.0, 0, []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1

    def _due(self, trainer: L.Trainer, elapsed: float) -> bool:
        if self.every_s is not None:
            return elapsed >= self.every_s * (len(self._taken) + 1)
        return trainer.current_epoch + 1 in self.at_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = time.perf_counter() - self._start - self._saving
        if not self._due(trainer, elapsed):
            return
        began = time.perf_counter()
        name = f"snap{len(self._taken) + 1}"
        trainer.save_checkpoint(Path(trainer.default_root_dir) / "checkpoints" / f"{name}.ckpt")
        self._taken.append({"name": name, "train_s": elapsed, "epochs": trainer.current_epoch + 1, "steps": self._steps})
        self._write(trainer)
        self._saving += time.perf_counter() - began

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, steps=self._steps)

    def _write(self, trainer: L.Trainer, **end: Any) -> None:
        if trainer.is_global_zero:
            write_json_atomic({"snapshots": self._taken, **end}, Path(trainer.default_root_dir) / SNAPSHOTS_FILE)


def snapshot_flags(every_s: float | None = None, at_epochs: Sequence[int] | None = None) -> list[str]:
    """LightningCLI flags that add the Snapshots callback to a fit (one of the two rules)."""
    rule = (["--trainer.callbacks.every_s", str(every_s)] if every_s is not None
            else ["--trainer.callbacks.at_epochs", json.dumps(list(at_epochs or []))])
    return ["--trainer.callbacks+=experiments.runner.Snapshots", *rule]


def points_of(run_dir: Path) -> list[dict[str, Any]]:
    """The run's points along training, each {name, train_s, epochs, steps, ckpt}: its snapshots,
    then the end of training (name 'end', ``last.ckpt``). A snapshot of the last epoch is the final
    model again and is left out; steps are None for a run trained without Snapshots."""
    path = run_dir / SNAPSHOTS_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    summary = train_metrics(run_dir)
    points = [{"steps": None, **s, "ckpt": run_dir / "checkpoints" / f"{s['name']}.ckpt"}
              for s in record.get("snapshots", []) if s["epochs"] < summary["epochs"]]
    points.append({"name": "end", "train_s": summary["total_time_s"], "epochs": summary["epochs"],
                   "steps": record.get("steps"), "ckpt": last_checkpoint(run_dir)})
    return points


def mean_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over the rows that have a value for it (None when none has)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def range_of(rows: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> str | None:
    """'min–max' of ``key`` (times ``scale``) over the rows with a value, to 3 significant digits;
    None unless at least two rows have one."""
    values = [scale * r[key] for r in rows if r.get(key) is not None]
    return f"{min(values):.3g}–{max(values):.3g}" if len(values) > 1 else None


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """rows → CSV with the union of their keys as header (first-seen order)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: '–' for missing (None, '', NaN), ints as they are, floats to ``digits``
    significant digits (whole numbers with thousands separators from 10**digits up)."""
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells through ``fmt``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
