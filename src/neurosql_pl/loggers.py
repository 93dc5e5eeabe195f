"""Weights & Biases logging that never prompts for a login.

`AutoWandbLogger` is Lightning's `WandbLogger` with `offline=None` meaning "online only when
this machine has W&B credentials" (WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc);
otherwise the run is written offline under `<save_dir>/wandb/` and can be uploaded later with
`wandb sync <save_dir>/wandb/offline-run-*`. WANDB_MODE, when set, wins.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


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
        **kwargs: Any,
    ) -> None:
        mode = os.environ.get("WANDB_MODE")
        if offline is None:
            offline = mode in ("offline", "dryrun", "disabled") if mode else not has_wandb_credentials()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model, **kwargs)
