"""Weights & Biases logging that never prompts for a login.

`AutoWandbLogger` is Lightning's `WandbLogger` with `offline=None` meaning "online only when
this machine has W&B credentials" (WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc);
otherwise the run is written offline under `<save_dir>/wandb/` and can be uploaded later with
`wandb sync <save_dir>/wandb/offline-run-*`. WANDB_MODE, when set, wins.

One W&B run per run folder, across resumes: the run id is chosen up front, written to
`<save_dir>/wandb_run_id.txt` and into every checkpoint (`artifacts.RunArtifacts`); `fit
--ckpt_path …` passes it back as `id` (`cli.NeuroSQLCLI`), and W&B continues that run
(`resume="allow"`) with the steps carrying on from the checkpoint's global step.
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from .files import atomic_write_bytes

RUN_ID_FILE = "wandb_run_id.txt"  # in the run folder: the W&B run this folder logs to
CHECKPOINT_KEY = "wandb_run_id"  # in a checkpoint: the W&B run it was written by


def new_run_id() -> str:
    """A fresh W&B run id: 8 characters of [a-z0-9], as W&B makes them."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def checkpoint_run_id(ckpt_path: str | os.PathLike[str]) -> str | None:
    """The W&B run id stored in a checkpoint (None when it has none or cannot be read); the
    tensors are memory-mapped, not read."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint has no id to give
        return None
    value = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return value if isinstance(value, str) and value else None


def folder_run_id(run_dir: str | os.PathLike[str]) -> str | None:
    """The W&B run id written in the run folder (None when there is none)."""
    try:
        value = (Path(run_dir) / RUN_ID_FILE).read_text().strip()
    except OSError:
        return None
    return value or None


def has_wandb_credentials() -> bool:
    """True when W&B can log in without asking: an API key in the environment, or a password
    (the API key) for api.wandb.ai in ~/.netrc ($NETRC if set)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entry = netrc.netrc(path).authenticators("api.wandb.ai")
    except (netrc.NetrcParseError, OSError):
        return False
    return entry is not None and bool(entry[2])


class AutoWandbLogger(WandbLogger):
    """WandbLogger, offline unless credentials exist (no login prompt, ever)."""

    def __init__(
        self,
        project: str = "neurosql",
        name: str | None = None,
        save_dir: str = ".",
        offline: bool | None = None,
        log_model: bool = False,
        id: str | None = None,  # noqa: A002 - WandbLogger's name for it
        **kwargs: Any,
    ) -> None:
        mode = os.environ.get("WANDB_MODE")
        if offline is None:
            offline = mode in ("offline", "dryrun", "disabled") if mode else not has_wandb_credentials()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        id = id or os.environ.get("WANDB_RUN_ID") or new_run_id()  # noqa: A001 - a sweep agent sets WANDB_RUN_ID
        if rank_zero_only.rank == 0:
            atomic_write_bytes(Path(save_dir) / RUN_ID_FILE, (id + "\n").encode())
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model, id=id,
                         **kwargs)
