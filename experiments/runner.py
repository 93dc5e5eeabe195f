"""What every experiment script shares: one CLI `fit` per run, a run folder's state, and the
CSV / markdown writers. Imported by the scripts beside it (``python -m experiments.<name>``)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurosql_pl.cli import NeuroSQLCLI
from neurosql_pl.cli import main as cli
from neurosql_pl.distribution_metrics import FID_METHODS
from neurosql_pl.evaluate import evaluate
from neurosql_pl.features import FEATURE_EXTRACTORS
from neurosql_pl.run_folder import EVAL_FILE, METRICS_FILE, EvaluationError, last_checkpoint

CONFIGS = Path(__file__).resolve().parent / "configs"

#: model label → (experiments/configs/model piece, extra CLI flags) of the paper's comparison
MODELS: dict[str, tuple[str, list[str]]] = {
    "NeuroSQL": ("neurosql", []),
    "VAE": ("vae", []),
    "GAN": ("gan", []),
    "DDPM": ("ddpm", []),
}


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
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=None, help=f"default runs/{experiment}/<data>")


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


def script_main(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], Any],
                argv: list[str] | None = None) -> None:
    """Parse argv, quieten Lightning, run; bad settings or data end with one 'error: …' line."""
    args = build_parser().parse_args(argv)
    quiet()
    try:
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


def trained_and_scored(
    label: str, run_dir: Path, train: Callable[[], Any], force: bool, n: int, data_dir: str,
    features: str = "inception", fid_method: str = "eigh", seed: int = 0,
) -> dict[str, Any]:
    """The eval.json report of ``run_dir``: reused when it was made with the same n, features and
    seed; else ``neurosql_pl.evaluate`` of ``checkpoints/last.ckpt``, after ``train()`` when no
    finished run is there (or ``force``)."""
    state = "absent" if force else run_state(run_dir)
    if state == "evaluated":
        report = json.loads((run_dir / EVAL_FILE).read_text())
        settings = report.get("settings", {})
        if (settings.get("n_samples"), settings.get("features"), settings.get("seed")) == (n, features, seed):
            print(f"[{label}] reusing {run_dir / EVAL_FILE}", flush=True)
            return report
    if state not in ("trained", "evaluated"):
        print(f"[{label}] training into {run_dir}", flush=True)
        train()
    print(f"[{label}] evaluating with N={n} samples", flush=True)
    return evaluate(
        last_checkpoint(run_dir), n=n, data_dir=data_dir, features=features, fid_method=fid_method,
        seed=seed, log=lambda msg: print(f"    {msg}", flush=True),
    )


def mean_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over the rows that have a value for it (None when none has)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """rows → CSV with the union of their keys as header (first-seen order)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: '–' for missing, ints as they are, floats to ``digits`` significant digits."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells through ``fmt``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
