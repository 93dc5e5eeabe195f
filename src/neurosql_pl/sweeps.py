"""W&B sweep files (`experiments/sweeps/*.yaml`) as command lines, and an offline dry run.

A sweep's `command` lists the program's arguments with `${args}` where W&B puts the sampled
parameters as flat dotted flags (`--model.rho=0.5`); LightningCLI parses those directly.
`python -m neurosql_pl.sweeps FILE` samples one parameter set and runs that command once with
W&B offline (no login): a dry run of what an agent would execute.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file")
    parser.add_argument("--seed", type=int, default=0, help="seeds the parameter draw")
    parser.add_argument("extra", nargs="*", help="more CLI flags appended to the trial (e.g. --trainer.max_epochs=1)")
    args = parser.parse_args(argv)
    spec = load_sweep(args.sweep_file)
    values = sample_parameters(spec["parameters"], random.Random(args.seed))
    command = [sys.executable, "-m", "neurosql_pl", *sweep_arguments(spec, values), *args.extra]
    print("dry run:", " ".join(command), flush=True)
    return subprocess.call(command, env={**os.environ, "WANDB_MODE": "offline"})


if __name__ == "__main__":
    raise SystemExit(main())
