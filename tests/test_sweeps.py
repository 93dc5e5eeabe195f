"""Every W&B sweep file expands to a command line that the LightningCLI accepts, optimises a quality
metric and gives each trial its own run folder; the offline dry run runs two trials and reports them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tests.helpers.cli_args import REPO

from neurosql_pl.cli import main
from neurosql_pl import sweeps
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
        got = getattr(getattr(cli, "model" if group == "model" else "datamodule").hparams, name)
        assert got == (pytest.approx(value) if isinstance(value, float) else value)
    assert spec["metric"] == {"name": "val/kid", "goal": "minimize"}
    assert "{trial}" in sweeps.run_folder_of(args) and not any(a.startswith("--overwrite") for a in args)


def test_a_sweep_file_without_args_placeholder_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {model.rho: {values: [0.5]}}\ncommand: [python, -m, neurosql_pl, fit]\n")
    with pytest.raises(ValueError, match=r"\$\{args\}"):
        load_sweep(bad)


def test_the_dry_run_runs_two_trials_into_their_own_folders_and_reports_the_metric(
    tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "sweep"
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(f"""
metric: {{name: val/kid, goal: minimize}}
parameters:
  model.lr: {{values: [0.001, 0.002]}}
command: [python, -m, neurosql_pl, fit, --config, model/neurosql, --config, data/mnist, --config, trainer/default,
  --data.data_dir={tiny_mnist}, --data.batch_size=16, --model.block_size=16, --model.generator_width=8,
  --model.lattice_cache_dir={tmp_path / "lattices"}, --trainer.max_epochs=1, --trainer.enable_progress_bar=false,
  --trainer.callbacks+=neurosql_pl.quality_callback.SampleQuality, --trainer.callbacks.n=8,
  --trainer.callbacks.features=random-conv, --trainer.callbacks.cache_dir={tmp_path / "stats"},
  "--trainer.default_root_dir={root}/{{trial}}", "${{args}}"]
""")
    assert sweeps.main([str(sweep), "--trials", "2"]) == 0
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == 2  # two trials, two folders, nothing overwritten
    table = capsys.readouterr().out.split("| run folder | val/kid | parameters |")[1]
    for folder in folders:
        kid = json.loads((folder / "metrics.json").read_text())["logged"]["val/kid"]
        assert f"| {folder} | {kid:.4g} | model.lr=" in table
        assert (folder / "wandb_run_id.txt").read_text().strip() == folder.name  # the trial's W&B run id

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(sweep.read_text().replace("/{trial}", ""))
    assert sweeps.main([str(fixed)]) == 2
    assert "must contain {trial}" in capsys.readouterr().err
