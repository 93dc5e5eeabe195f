"""Download (or check) the data of one data config: `neurosql prepare NAME` (`make data DATA=NAME`).

    neurosql prepare celeba                        # experiments/configs/data/celeba.yaml
    neurosql prepare path/to/data.yaml
    neurosql prepare oasis --data.data_dir /big/disk/data

The config is a LightningCLI data piece (`data: {class_path: ..., init_args: {...}}`);
`--data.KEY VALUE` overrides one init argument (VALUE is read as YAML: 64, null, [cat]).
The datamodule is built from it and its `prepare_data()` is called: that downloads what can be
downloaded, and otherwise stops with the error that says what to place where. Exit status 0
when the data is ready, 1 when it is not or the config is wrong (one 'error: …' message), 2 for
a wrong command line. The earlier spellings `neurosql-prepare NAME`, `--config PATH` and
`python -m neurosql_pl.datamodules.prepare NAME` work too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from neurosql_pl import configs
from neurosql_pl.errors import SettingError
from neurosql_pl.run_folder import data_config_section, instantiate

if TYPE_CHECKING:
    import lightning as L

CONFIG_DIR = configs.config_dir("data")  # experiments/configs/data, installed as neurosql_pl.configs


def available_configs(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the data configs (file stems of `config_dir/*.yaml`), sorted."""
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def resolve_config(config: str, config_dir: Path = CONFIG_DIR) -> Path:
    """The file `config`, else the file of the config name `config` (`config_dir/NAME.yaml`);
    SettingError, listing the names, when there is neither."""
    path = Path(config)
    if path.is_file():
        return path
    if "/" in config or path.suffix in (".yaml", ".yml"):
        raise SettingError(f"no config file {path}")
    path = config_dir / f"{config}.yaml"
    if not path.is_file():
        raise SettingError(
            f"unknown data config {config!r}; available: {', '.join(available_configs(config_dir))} (in {config_dir})"
        )
    return path


def prepare(config: str, data: dict[str, Any] | None = None) -> L.LightningDataModule:
    """Download (or check) the data of one data config; returns its datamodule, the data ready.

    Args:
        config: a data config's name (experiments/configs/data/NAME.yaml: mnist, celeba, afhq, oasis,
            folder) or the path of a data config file.
        data: init arguments of the datamodule to override; on the command line also one at a time,
            --data.KEY VALUE (VALUE read as YAML).

    Raises DatasetNotFoundError, CorruptFileError or ChecksumMismatchError (what to place where)
    when the data is not ready, SettingError when the config or an override is wrong.
    """
    path = resolve_config(config)
    try:
        datamodule = instantiate(data_config_section(path), data or {})
    except (ValueError, TypeError) as err:  # the datamodule's constructor: an unknown or impossible setting
        raise SettingError(f"{path}: {err}") from err
    datamodule.prepare_data()
    return datamodule


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, object]]:
    """Take the `--data.KEY VALUE` / `--data.KEY=VALUE` pairs out of `argv` (VALUE read as YAML):
    (the other arguments, {KEY: value})."""
    rest: list[str] = []
    overrides: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--data."):
            key, eq, value = arg[len("--data."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value")
                i += 1
                value = argv[i]
            overrides[key] = yaml.safe_load(value)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def build_parser():
    """The command's parser: CONFIG and ``--data`` from ``prepare``'s parameters (neurosql_pl.commands)."""
    from neurosql_pl.commands import function_parser

    parser = function_parser(prepare, "neurosql prepare", __doc__.split("\n\n")[0], positional=True)
    parser.epilog = f"available configs: {', '.join(available_configs())}"
    return parser


def command(argv: Sequence[str]) -> int:
    """``neurosql prepare …``: 0 when the data is ready (said on stdout). A UserError propagates:
    `neurosql` prints it (status 1)."""
    from neurosql_pl.commands import parse_command_line

    parser = build_parser()
    try:
        rest, overrides = split_overrides(argv)
    except ValueError as err:
        parser.error(str(err))  # exits with status 2
    rest = [arg for arg in rest if arg != "--config"]  # the earlier `--config PATH`: CONFIG is positional now
    options = parse_command_line(parser, [arg.removeprefix("--config=") for arg in rest])
    datamodule = prepare(options["config"], {**(options["data"] or {}), **overrides})
    print(f"{Path(options['config']).stem}: data ready ({type(datamodule).__name__}, data_dir={datamodule.data_dir})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The earlier spellings ``neurosql-prepare …`` and ``python -m neurosql_pl.datamodules.prepare …``,
    the same as ``neurosql prepare …``: the exit status."""
    from neurosql_pl.commands import run_command

    return run_command(command, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
