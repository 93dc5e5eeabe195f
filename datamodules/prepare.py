"""Download (or check) the data of one data config: what `make data DATA=<name>` runs.

    neurosql-prepare celeba                        # experiments/configs/data/celeba.yaml
    neurosql-prepare --config path/to/data.yaml
    neurosql-prepare oasis --data.data_dir /big/disk/data

The config is a LightningCLI data piece (`data: {class_path: ..., init_args: {...}}`);
`--data.KEY VALUE` overrides one init argument (VALUE is read as YAML: 64, null, [cat]).
The datamodule is built from it and its `prepare_data()` is called: that downloads what can be
downloaded, and otherwise stops with the error that says what to place where. Exit status 0
when the data is ready, 1 when it is not (the message is printed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from neurosql_pl import configs
from neurosql_pl.run_folder import EvaluationError, data_config_section, instantiate

from .errors import ChecksumMismatchError, CorruptFileError, DatasetNotFoundError

CONFIG_DIR = configs.config_dir("data")  # experiments/configs/data, installed as neurosql_pl.configs


def available_configs(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the data configs (file stems of `config_dir/*.yaml`), sorted."""
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def resolve_config(name: str | None, config: str | None, config_dir: Path = CONFIG_DIR) -> Path:
    """The config file for a name or an explicit path; ValueError listing the choices otherwise."""
    if (name is None) == (config is None):
        raise ValueError("give either a config NAME or --config PATH (exactly one)")
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"no config file {path}")
        return path
    path = config_dir / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown data config {name!r}; available: {', '.join(available_configs(config_dir))} (in {config_dir})")
    return path


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, object]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="neurosql-prepare", description=__doc__.split("\n\n")[0],
        epilog=f"available configs: {', '.join(available_configs())}",
    )
    parser.add_argument("name", nargs="?", help="a config in experiments/configs/data (without .yaml)")
    parser.add_argument("--config", help="path to a data config instead of NAME")
    try:
        rest, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    try:
        config_path = resolve_config(args.name, args.config)
        datamodule = instantiate(data_config_section(config_path), overrides)
    except (ValueError, TypeError, EvaluationError) as e:  # EvaluationError: config or class unreadable
        parser.error(str(e))  # exits with status 2
    try:
        datamodule.prepare_data()
    except (DatasetNotFoundError, CorruptFileError, ChecksumMismatchError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{config_path.stem}: data ready ({type(datamodule).__name__}, data_dir={datamodule.data_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
