"""AutoWandbLogger: online only with W&B credentials (WANDB_API_KEY, or an api.wandb.ai entry in
~/.netrc or $NETRC), WANDB_MODE wins, and it never asks for a login.

Every test starts from a clean slate: no WANDB_* variables, HOME a fresh folder without a
.netrc, NETRC unset. No test creates an online run (sockets are blocked anyway).
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest

from neurosql_pl.loggers import AutoWandbLogger, has_wandb_credentials

NETRC_ENTRY = "machine api.wandb.ai\n  login user\n  password 0123456789abcdef0123456789abcdef01234567\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with no W&B credentials and no W&B settings in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("NETRC", "WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_no_credentials_means_offline(home, tmp_path):
    assert not has_wandb_credentials()
    assert AutoWandbLogger(save_dir=str(tmp_path / "run"))._offline


def test_api_key_means_online(home, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    assert has_wandb_credentials()
    assert not AutoWandbLogger(save_dir=str(tmp_path / "run"))._offline


@pytest.mark.parametrize("where", ["home", "NETRC"])
def test_netrc_entry_for_api_wandb_ai_means_online(home, monkeypatch, tmp_path, where):
    path = home / ".netrc" if where == "home" else tmp_path / "elsewhere" / "netrc"
    path.parent.mkdir(exist_ok=True)
    path.write_text(NETRC_ENTRY)
    path.chmod(0o600)
    if where == "NETRC":
        monkeypatch.setenv("NETRC", str(path))
    assert has_wandb_credentials()
    assert not AutoWandbLogger(save_dir=str(tmp_path / "run"))._offline


@pytest.mark.parametrize(
    "content",
    ["machine example.org\n  login a\n  password b\n", "machine api.wandb.ai\n  login user\n", "not a netrc file\n"],
    ids=["other-host", "no-password", "unparsable"],
)
def test_netrc_without_a_usable_wandb_entry_means_offline(home, tmp_path, content):
    (home / ".netrc").write_text(content)
    (home / ".netrc").chmod(0o600)
    assert not has_wandb_credentials()
    assert AutoWandbLogger(save_dir=str(tmp_path / "run"))._offline


@pytest.mark.parametrize(
    ("mode", "credentials", "offline"),
    [("offline", True, True), ("dryrun", True, True), ("disabled", True, True), ("online", False, False)],
)
def test_wandb_mode_wins_over_credentials(home, monkeypatch, tmp_path, mode, credentials, offline):
    monkeypatch.setenv("WANDB_MODE", mode)
    if credentials:
        monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    assert AutoWandbLogger(save_dir=str(tmp_path / "run"))._offline is offline


def test_explicit_offline_argument_wins(home, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    assert AutoWandbLogger(save_dir=str(tmp_path / "a"), offline=True)._offline
    monkeypatch.delenv("WANDB_API_KEY")
    assert not AutoWandbLogger(save_dir=str(tmp_path / "b"), offline=False)._offline


def test_without_credentials_a_run_starts_offline_and_never_asks_for_a_login(home, monkeypatch, tmp_path):
    """The run itself (wandb.init) starts without any login and with no terminal to answer
    from: W&B asks only through wandb.login / its _login, which must not be called, and input()
    and stdin fail if anything reads them."""
    import wandb
    import wandb.sdk.wandb_login as wandb_login

    def asked(*args, **kwargs):
        raise AssertionError("W&B asked for a login")

    wandb.finish()  # a run an earlier test left open would be reused instead of a new one
    monkeypatch.setattr(wandb, "login", asked)
    monkeypatch.setattr(wandb_login, "_login", asked)
    monkeypatch.setattr(builtins, "input", asked)
    monkeypatch.setattr(sys, "stdin", None)
    logger = AutoWandbLogger(save_dir=str(tmp_path / "run"))
    run = logger.experiment
    try:
        assert run.offline and run.settings.mode in ("offline", "dryrun")
        logger.log_metrics({"loss": 1.0}, step=0)
    finally:
        run.finish()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_a_resume_continues_the_same_wandb_run_with_steps_that_carry_on(home, monkeypatch, tmp_path, tiny_mnist):
    """Two fits into one run folder, the second resumed with --ckpt_path: one W&B run id (in the run
    folder, in the checkpoint, and in the offline run directories W&B writes, which `wandb sync`
    uploads as one run); the logged global steps of the second go on from the first's."""
    import torch
    import wandb

    from neurosql_pl.cli import main
    from neurosql_pl.loggers import CHECKPOINT_KEY, RUN_ID_FILE
    from tests.helpers.cli_args import tiny_fit_args

    wandb.finish()
    monkeypatch.setenv("WANDB_MODE", "offline")
    steps: list[int] = []
    original = AutoWandbLogger.log_metrics

    def record(self, metrics, step=None):
        steps.append(step)
        return original(self, metrics, step)

    monkeypatch.setattr(AutoWandbLogger, "log_metrics", record)
    run = tmp_path / "run"
    common = ["--trainer.log_every_n_steps", "1", "--model.perceptual", "null"]
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", *common))
    run_id = (run / RUN_ID_FILE).read_text().strip()
    last = run / "checkpoints" / "last.ckpt"
    assert len(run_id) == 8 and torch.load(last, weights_only=False)[CHECKPOINT_KEY] == run_id
    first = list(steps)
    steps.clear()
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", *common, "--trainer.max_epochs", "3", "--ckpt_path", str(last)))
    assert (run / RUN_ID_FILE).read_text().strip() == run_id
    assert torch.load(last, weights_only=False)[CHECKPOINT_KEY] == run_id
    assert min(steps) >= max(first) == 8 and max(steps) == 12  # 4 steps per epoch: epochs 0-1, then epoch 2
    folders = sorted((run / "wandb").glob("offline-run-*"))  # one per process (a "-1" suffix in the same second)
    assert folders and all(f"-{run_id}" in f.name and (f / f"run-{run_id}.wandb").is_file() for f in folders)

    fresh = tmp_path / "other"  # a new run folder: a new W&B run
    main(tiny_fit_args(tiny_mnist, fresh, tmp_path / "lattices", *common, "--trainer.max_epochs", "1"))
    assert (fresh / RUN_ID_FILE).read_text().strip() != run_id
