"""The project's YAML config pieces, installed with the library as the package `neurosql_pl.configs`.

In the repository they are experiments/configs/{data,model,trainer}/NAME.yaml; an installed
package (wheel or editable) carries the same files, so they are found without a checkout:

    from neurosql_pl.configs import config_path, available
    config_path("data", "mnist")        # → …/configs/data/mnist.yaml
    available("model")                  # → ["ddpm", "gan", "neurosql_lpips", ...]

    neurosql fit --config trainer/default --config model/neurosql_mse --config data/mnist
    neurosql-prepare mnist

(`neurosql fit` reads `KIND/NAME` as this package's piece when no such file exists.)
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["KINDS", "available", "config_dir", "config_path", "packaged_config"]

KINDS: tuple[str, ...] = ("data", "model", "trainer")
_SHORT_NAME = re.compile(r"(?P<kind>[a-z]+)/(?P<name>[\w.-]+?)(?:\.yaml)?")


def config_dir(kind: str | None = None) -> Path:
    """The folder of the config pieces of `kind` ("data", "model", "trainer"); None: their parent."""
    root = Path(__file__).resolve().parent
    if kind is None:
        return root
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r}; one of {', '.join(KINDS)}")
    return root / kind


def available(kind: str) -> list[str]:
    """Names (file stems) of the config pieces of `kind`, sorted."""
    return sorted(p.stem for p in config_dir(kind).glob("*.yaml"))


def config_path(kind: str, name: str) -> Path:
    """The file of config piece `name` (with or without `.yaml`) of `kind`; FileNotFoundError
    listing the choices when there is none."""
    path = config_dir(kind) / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} config {name!r}; available: {', '.join(available(kind))} (in {path.parent})")
    return path


def packaged_config(value: str) -> Path | None:
    """The piece a short name `KIND/NAME` (e.g. "data/mnist") stands for, or None when `value`
    is not of that form or names no packaged piece."""
    match = _SHORT_NAME.fullmatch(value)
    if match is None or match["kind"] not in KINDS:
        return None
    try:
        return config_path(match["kind"], match["name"])
    except FileNotFoundError:
        return None
