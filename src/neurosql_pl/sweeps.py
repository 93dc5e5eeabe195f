"""W&B sweep files (`experiments/sweeps/*.yaml`) as command lines, and an offline dry run.

A sweep's `command` lists the program's arguments with `${args}` where W&B puts the sampled
parameters as flat dotted flags (`--model.rho=0.5`); LightningCLI parses those directly.
`python -m neurosql_pl.sweeps FILE` samples a parameter set per trial and runs that command with W&B
offline (no login), as an agent would: each trial gets a W&B run id (WANDB_RUN_ID) and its own run
folder (`{trial}` in `--trainer.default_root_dir`). At the end it prints each trial's folder and
its value of the sweep's metric (`val/kid`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .loggers import new_run_id


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep configuration; ValueError when it lacks `parameters` or a `command` with ${args}."""
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or "parameters" not in spec or "${args}" not in spec.get("command", []):
        raise ValueError(f"{path}: a sweep file needs `parameters` and a `command` list containing ${{args}}")
    return spec


def sample_parameters(parameters: dict[str, dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """One draw from W&B's parameter kinds used here: value, values, (log_)uniform(_values)."""
    drawn = {}
    for name, p in parameters.items():
        if "value" in p:
            drawn[name] = p["value"]
        elif "values" in p:
            drawn[name] = rng.choice(p["values"])
        elif p.get("distribution") == "log_uniform_values":
            drawn[name] = math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"])))
        elif p.get("distribution", "uniform") == "uniform" and {"min", "max"} <= p.keys():
            drawn[name] = rng.uniform(p["min"], p["max"])
        else:
            raise ValueError(f"parameter {name!r}: unsupported sweep specification {p}")
    return drawn


def sweep_arguments(spec: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command's arguments after `-m neurosql_pl`, with ${args} expanded as W&B does."""
    command = [part for part in spec["command"] if part != "${env}"]
    start = command.index("neurosql_pl") + 1 if "neurosql_pl" in command else 0
    expanded: list[str] = []
    for part in command[start:]:
        expanded += [f"--{k}={v}" for k, v in values.items()] if part == "${args}" else [str(part)]
    return expanded


def run_folder_of(arguments: list[str]) -> str | None:
    """The value of the last ``--trainer.default_root_dir=…`` among the arguments (None if none)."""
    flag = "--trainer.default_root_dir="
    values = [a[len(flag):] for a in arguments if a.startswith(flag)]
    return values[-1] if values else None


def trial_metric(folder: Path, name: str) -> float | None:
    """The sweep metric ``name`` as the trial logged it last (its metrics.json), or None."""
    try:
        value = json.loads((folder / "metrics.json").read_text())["logged"].get(name)
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file")
    parser.add_argument("--seed", type=int, default=0, help="seeds the parameter draws (trial k uses seed + k)")
    parser.add_argument("--trials", type=int, default=2, help="trials to run, one after the other")
    parser.add_argument("extra", nargs="*", help="more CLI flags appended to every trial (e.g. --trainer.max_epochs=1)")
    args = parser.parse_args(argv)
    spec = load_sweep(args.sweep_file)
    metric = spec.get("metric", {}).get("name")
    results = []
    for k in range(args.trials):
        values = sample_parameters(spec["parameters"], random.Random(args.seed + k))
        arguments = [*sweep_arguments(spec, values), *args.extra]
        root = run_folder_of(arguments)
        if root is None or "{trial}" not in root:
            print(f"error: {args.sweep_file}: --trainer.default_root_dir must contain {{trial}}, so that every trial "
                  "writes its own run folder", file=sys.stderr)
            return 2
        trial = new_run_id()  # what a W&B agent puts in WANDB_RUN_ID
        print(f"dry run, trial {k + 1} of {args.trials}: {sys.executable} -m neurosql_pl {' '.join(arguments)}", flush=True)
        status = subprocess.call([sys.executable, "-m", "neurosql_pl", *arguments],
                                 env={**os.environ, "WANDB_MODE": "offline", "WANDB_RUN_ID": trial})
        if status != 0:
            return status
        folder = Path(root.replace("{trial}", trial))
        results.append((folder, trial_metric(folder, metric) if metric else None, values))
    print(f"\n| run folder | {metric} | parameters |\n|---|---|---|")
    for folder, value, values in results:
        shown = "–" if value is None else f"{value:.4g}"
        print(f"| {folder} | {shown} | {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in values.items())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
