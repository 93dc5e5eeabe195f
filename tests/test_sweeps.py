"""Every W&B sweep file expands to a command line that the LightningCLI accepts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tests.helpers.cli_args import REPO

from neurosql_pl.cli import main
from neurosql_pl.sweeps import load_sweep, sample_parameters, sweep_arguments

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_command_line_parses(path: Path, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_sweep(path)
    values = sample_parameters(spec["parameters"], random.Random(seed))
    args = sweep_arguments(spec, values)
    assert args[0] == "fit" and all(f"--{k}={v}" in args for k, v in values.items())
    monkeypatch.chdir(REPO)  # the sweep's config paths are relative to the repository
    cli = main([*args[1:], "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"], run=False)
    for key, value in values.items():
        group, name = key.split(".")
        assert getattr(getattr(cli, "model" if group == "model" else "datamodule").hparams, name) == pytest.approx(value)


def test_a_sweep_file_without_args_placeholder_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {model.rho: {values: [0.5]}}\ncommand: [python, -m, neurosql_pl, fit]\n")
    with pytest.raises(ValueError, match=r"\$\{args\}"):
        load_sweep(bad)
