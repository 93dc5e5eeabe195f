"""A run folder: what one training run leaves on disk, and how to read it back.

A run folder (the ``trainer.default_root_dir`` of a CLI `fit`) holds
  config.yaml             the run's LightningCLI config (its ``model`` and ``data`` sections)
  metrics.json            the training summary of ``artifacts.RunArtifacts``: loss, epoch times
  checkpoints/last.ckpt   the Lightning checkpoint
  eval.json               the report of ``neurosql_pl.evaluate``, once evaluated
  samples.png, reconstructions.png

Reading it back; every problem is an ``EvaluationError`` whose message says what to do:
  ``run_dir_of``, ``read_checkpoint``   a checkpoint and the run folder it belongs to
  ``read_run_config``, ``read_yaml``    the run's config.yaml (or any YAML mapping)
  ``load_model``, ``resolve_device``   the LightningModule of a checkpoint, in eval mode; "auto" → a device
  ``data_section``                      the ``data: {class_path, init_args}`` section to use
                                        (``data_config_section`` reads one from a YAML piece)
  ``instantiate``                       the builder of a ``{class_path, init_args}`` section
  ``build_datamodule``, ``run_datamodule``   a datamodule built, prepared and set up
  ``heldout_dataset``, ``dataset_images``    its held-out split and images from a dataset
  ``train_metrics``                     metrics.json (``training_times``, ``epoch_times``)
"""

from __future__ import annotations

import importlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import UserError

__all__ = [
    "CONFIG_FILE",
    "EVAL_FILE",
    "METRICS_FILE",
    "EvaluationError",
    "build_datamodule",
    "data_config_section",
    "data_section",
    "dataset_images",
    "epoch_times",
    "heldout_dataset",
    "resolve_device",
    "import_class",
    "instantiate",
    "last_checkpoint",
    "load_model",
    "read_checkpoint",
    "read_run_config",
    "read_yaml",
    "run_datamodule",
    "run_dir_of",
    "train_metrics",
    "training_times",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"


class EvaluationError(UserError, RuntimeError):
    """A checkpoint, config or dataset problem that stops reading a run, and so its evaluation
    (the message says what to do)."""


# ----------------------------------------------------------------------------- files of the folder


def run_dir_of(ckpt: str | os.PathLike[str]) -> Path:
    """The run folder: the checkpoint's folder, or its parent when that folder is ``checkpoints``."""
    parent = Path(ckpt).resolve().parent
    return parent.parent if parent.name == CHECKPOINT_DIR else parent


def last_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/checkpoints/last.ckpt`` (it may not exist yet)."""
    return Path(run_dir) / CHECKPOINT_DIR / "last.ckpt"


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file that holds a mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise EvaluationError(f"cannot read config {path}: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise EvaluationError(f"config {path} is not a YAML mapping")
    return data


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``config.yaml``; None when the folder has none."""
    path = Path(run_dir) / CONFIG_FILE
    return read_yaml(path) if path.is_file() else None


def read_checkpoint(ckpt: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """Load a checkpoint dict on the CPU (weights-only when possible). Returns (checkpoint,
    weights_only used). Raises EvaluationError for a missing, unreadable or corrupt file."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise EvaluationError(f"checkpoint not found: {ckpt}")
    if not ckpt.is_file():
        raise EvaluationError(f"checkpoint {ckpt} is not a file")
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True), True
    except Exception as first:  # noqa: BLE001
        if "weights_only" not in str(first).lower() and "weights only" not in str(first).lower():
            raise EvaluationError(
                f"cannot read checkpoint {ckpt} ({type(first).__name__}: {str(first).strip()[:300]}); "
                "the file is truncated or corrupt. Use another checkpoint (e.g. checkpoints/last.ckpt "
                "or the epoch=… file beside it)"
            ) from first
    try:  # a checkpoint with non-tensor objects: full unpickling (only for files you trust)
        return torch.load(ckpt, map_location="cpu", weights_only=False), False
    except Exception as err:  # noqa: BLE001
        raise EvaluationError(f"cannot read checkpoint {ckpt} ({type(err).__name__}: {err}); the file is corrupt") from err


def train_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The training summary ``<run_dir>/metrics.json`` (written by ``artifacts.RunArtifacts``);
    {} when the file is missing, unreadable or not a JSON object."""
    try:
        data = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_times(run_dir: str | os.PathLike[str]) -> dict[str, float | int | None]:
    """Training time from the run's metrics.json: {epoch_time_s (mean per epoch), total_time_s,
    epochs}; values are None when the file or a key is missing or unreadable."""
    data = train_metrics(run_dir)
    out: dict[str, float | int | None] = {"epoch_time_s": None, "total_time_s": None, "epochs": None}
    for key, kind in (("epoch_time_s", float), ("total_time_s", float), ("epochs", int)):
        if _finite_number(data.get(key)):
            out[key] = kind(data[key])
    return out


def epoch_times(run_dir: str | os.PathLike[str]) -> list[float]:
    """The time of each training epoch (s) from the run's metrics.json; [] when there are none."""
    times = train_metrics(run_dir).get("epoch_times_s")
    return [float(t) for t in times if _finite_number(t)] if isinstance(times, list) else []


# ----------------------------------------------------------------------------- classes and the model


def import_class(class_path: str) -> type:
    """The class named by ``package.module.Class``."""
    module, _, name = class_path.rpartition(".")
    if not module:
        raise EvaluationError(f"class path {class_path!r} is not of the form 'package.module.Class'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise EvaluationError(f"cannot import {class_path!r}: {type(err).__name__}: {err}") from err


def instantiate(section: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
    """The object a LightningCLI-style section ``{class_path, init_args}`` describes, with
    ``overrides`` on top of its init_args. Errors of the class's constructor pass through."""
    cls = import_class(section["class_path"])
    return cls(**{**(section.get("init_args") or {}), **(overrides or {})})


def resolve_device(device: str) -> torch.device:
    """"auto" → cuda when available, else cpu; any other name as it is."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


def load_model(ckpt: str | os.PathLike[str], run_config: dict[str, Any] | None, checkpoint: dict[str, Any],
               weights_only: bool) -> tuple[Any, str]:
    """(the LightningModule of ``ckpt`` in eval mode on the CPU, its class path).

    The class is ``model.class_path`` of the run's config, else the checkpoint's own
    ``hyper_parameters._class_path``, else ``neurosql_pl.NeuroSQL``. ``checkpoint`` and
    ``weights_only`` are what ``read_checkpoint(ckpt)`` returned."""
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = (
        ((run_config or {}).get("model") or {}).get("class_path")
        or hparams.get("_class_path")
        or "neurosql_pl.NeuroSQL"
    )
    cls = import_class(class_path)
    if "state_dict" not in checkpoint:
        raise EvaluationError(f"{ckpt} holds no 'state_dict': it is not a Lightning checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001
        raise EvaluationError(f"cannot build {class_path} from {ckpt}: {type(err).__name__}: {err}") from err
    if not callable(getattr(model, "sample", None)):
        raise EvaluationError(f"{class_path} has no sample(n, generator) method; evaluate needs one")
    model.eval()
    return model, class_path


# ----------------------------------------------------------------------------- the data


def data_config_section(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``data: {class_path, init_args}`` section of a YAML file (a data piece of
    experiments/configs/data or a run's config.yaml); a file that is only that section will do."""
    piece = read_yaml(path)
    section = piece.get("data", piece)
    if not isinstance(section, dict) or "class_path" not in section:
        raise EvaluationError(f"{path} has no 'data: {{class_path: …, init_args: …}}' section")
    return section


def data_section(
    data_config: str | os.PathLike[str] | None = None,
    run_config: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """(the ``data`` section {class_path, init_args}, where it came from): from the file
    ``data_config``, else the run's config, else the checkpoint's datamodule hyper-parameters."""
    if data_config is not None:
        return data_config_section(data_config), str(data_config)
    if run_config and isinstance(run_config.get("data"), dict) and "class_path" in run_config["data"]:
        return run_config["data"], f"run {CONFIG_FILE}"
    dm_hparams = dict((checkpoint or {}).get("datamodule_hyper_parameters") or {})
    if "_class_path" in dm_hparams:
        class_path = dm_hparams.pop("_class_path")
        init_args = {k: v for k, v in dm_hparams.items() if not k.startswith("_")}
        return {"class_path": class_path, "init_args": init_args}, "checkpoint datamodule hyper-parameters"
    raise EvaluationError(
        f"no data configuration: the run folder has no {CONFIG_FILE} and the checkpoint no datamodule "
        "hyper-parameters; pass --data-config experiments/configs/data/<name>.yaml"
    )


def build_datamodule(section: Mapping[str, Any], data_dir: str | None = None) -> Any:
    """The datamodule of a ``data`` section, instantiated (``data_dir`` overrides its own),
    prepared and set up for fitting; it must offer ``train_images(indices)``."""
    try:
        dm = instantiate(section, None if data_dir is None else {"data_dir": data_dir})
        dm.prepare_data()
        dm.setup("fit")
    except EvaluationError:
        raise
    except Exception as err:  # noqa: BLE001 - DatasetNotFoundError etc.: keep their message
        raise EvaluationError(f"cannot load the data ({section['class_path']}): {type(err).__name__}: {err}") from err
    if not hasattr(dm, "train_images"):
        raise EvaluationError(f"{section['class_path']} has no train_images(indices); evaluate needs one")
    return dm


def run_datamodule(run_dir: str | os.PathLike[str], data_dir: str | None = None) -> Any:
    """The set-up datamodule of the run's config.yaml (``data_dir`` overrides its own)."""
    section, _ = data_section(run_config=read_run_config(run_dir))
    return build_datamodule(section, data_dir)


def heldout_dataset(dm: Any) -> torch.utils.data.Dataset:
    """The test split's dataset, else the validation split's (items (image, index) or image)."""
    for stage in ("fit", "test"):  # datamodules that build the test split only in setup("test")
        if stage == "test":
            try:
                dm.setup("test")
            except Exception:  # noqa: BLE001
                break
        for name in ("test_dataloader", "val_dataloader"):
            try:
                dataset = getattr(getattr(dm, name)(), "dataset", None)
            except Exception:  # noqa: BLE001 - no such split
                continue
            if dataset is not None and len(dataset) > 0:
                return dataset
    raise EvaluationError(
        f"{type(dm).__name__} has no test or validation images to score against (the run held none out). Hold "
        "images out when training (an image folder: --data.val_fraction 0.1), or score against the training "
        "images with --reference train (labelled as such in eval.json: it flatters a model that copies them)"
    )


def _image_of(item: Any) -> Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def dataset_images(dataset: torch.utils.data.Dataset, indices: Tensor, batch_size: int = 256) -> Tensor:
    """Images of ``dataset`` at ``indices`` as one float32 tensor (n, C, H, W)."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False)
    return torch.cat([_image_of(batch).float() for batch in loader])
