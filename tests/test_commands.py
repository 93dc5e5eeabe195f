"""`neurosql sample | evaluate | prepare`: subcommands of the one command, each with an option per
parameter of its function (`--help` lists them), a wrong option in one line, `make` using them."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.cli_args import REPO
from tests.helpers.image_files import write_image_folder

from neurosql_pl.cli import console_main
from neurosql_pl.cli import FUNCTION_COMMANDS
from neurosql_pl.datamodules.prepare import prepare
from neurosql_pl.evaluate import evaluate
from neurosql_pl.sampling import sample_to_folder

#: subcommand → (its function, the parameters that are no options)
FUNCTIONS = {"sample": (sample_to_folder, set()), "evaluate": (evaluate, {"extractor", "log"}), "prepare": (prepare, set())}


@pytest.mark.parametrize("name", sorted(FUNCTION_COMMANDS))
def test_each_subcommand_has_help_listing_its_functions_parameters(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        console_main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: neurosql {name} ")
    function, not_options = FUNCTIONS[name]
    for parameter in set(inspect.signature(function).parameters) - not_options:
        assert f"--{parameter} " in text or f"  {parameter} " in text, parameter  # an option, or positional
    assert "(required" in text  # --ckpt, CONFIG


@pytest.mark.parametrize("name", sorted(FUNCTION_COMMANDS))
def test_a_wrong_option_of_a_subcommand_is_one_line(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        console_main([name, "mnist", "--bogus", "1"] if name == "prepare" else [name, "--ckpt", "x.ckpt", "--bogus", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == f"error: unrecognized arguments: --bogus 1 (`neurosql {name} --help` lists every option)\n"


def test_make_data_runs_the_prepare_subcommand(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than requirements.txt: make skips the install
    folder = write_image_folder(tmp_path, 3)
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "data", "DATA=folder", f"VENV={venv}", f"PY={sys.executable}",
         f"ARGS=--data.data_dir {folder}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"folder: data ready (ImageFolderDataModule, data_dir={folder})" in done.stdout
