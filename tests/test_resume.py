"""Resuming: a run stopped (cleanly, by Ctrl-C or by SIGTERM mid-epoch, as SLURM preempts a job)
and resumed from its last checkpoint continues exactly as an uninterrupted run does (deterministic
mode), the EMA of the generator's weights included."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL
from neurosql_pl.cli import console_main
from neurosql_pl.preemption import SIGTERMException, StopOnSigterm
from tests.helpers.cli_args import tiny_fit_args
from tests.helpers.models import SMALL_NEUROSQL


class CtrlC(L.Callback):
    """Raises KeyboardInterrupt in the middle of the given epoch, as Ctrl-C would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


class SigTerm(L.Callback):
    """Sends this process SIGTERM in the middle of the given epoch, as SLURM does before a kill."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def run(data_dir: Path, root: Path, epochs: int, seed: int, ckpt: Path | None = None, callbacks=(), **overrides) -> NeuroSQL:
    L.seed_everything(seed)
    settings = {**SMALL_NEUROSQL, "rho": 0.5, "ema_decay": 0.9, **overrides}
    model = NeuroSQL(**settings, lattice_cache_dir=str(root.parent / "lattices"))
    trainer = L.Trainer(
        max_epochs=epochs, deterministic=True, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=1), *callbacks],
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False), ckpt_path=ckpt)
    return model


@pytest.mark.parametrize("stop", ["after epoch 2", "ctrl-c in epoch 3", "sigterm in epoch 3"])
def test_resumed_run_equals_uninterrupted_run(stop: str, tiny_mnist: Path, tmp_path: Path) -> None:
    uninterrupted = run(tiny_mnist, tmp_path / "a", epochs=4, seed=0)

    if stop == "after epoch 2":
        run(tiny_mnist, tmp_path / "b", epochs=2, seed=0)
    elif stop == "sigterm in epoch 3":
        handler = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SIGTERMException):  # after the batch in flight, not at the end of the epoch
                run(tiny_mnist, tmp_path / "b", epochs=4, seed=0, callbacks=[SigTerm(epoch=2, batch=1), StopOnSigterm()])
        finally:
            signal.signal(signal.SIGTERM, handler)
    else:
        handler = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit):  # Lightning shuts down gracefully, then exits
                run(tiny_mnist, tmp_path / "b", epochs=4, seed=0, callbacks=[CtrlC(epoch=2, batch=1)])
        finally:
            signal.signal(signal.SIGINT, handler)
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8  # the end of epoch 2 (4 steps each)

    resumed = run(tiny_mnist, tmp_path / "b", epochs=4, seed=123, ckpt=last)  # another seed: state comes from the ckpt
    assert_same_state(resumed, uninterrupted)


def assert_same_state(resumed: NeuroSQL, uninterrupted: NeuroSQL) -> None:
    """Lattice, π and Ẑ equal; the generator equal up to float rounding; its EMA equal."""
    for name in ("lattice", "assignment", "latents"):
        assert torch.equal(getattr(resumed, name), getattr(uninterrupted, name)), name
    for (key, a), (_, b) in zip(uninterrupted.generator.state_dict().items(), resumed.generator.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), key
    assert int(resumed.ema_generator.n_averaged) == int(uninterrupted.ema_generator.n_averaged) == 1 + 16
    for (key, a), (_, b) in zip(uninterrupted.ema_generator.state_dict().items(), resumed.ema_generator.state_dict().items()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    "overrides", [{"oversample": 2}, {"oversample": 2, "code_noise": 0.2}], ids=["oversample", "oversample+code_noise"]
)
def test_resumed_run_with_random_codes_equals_uninterrupted_run(overrides: dict, tiny_mnist: Path, tmp_path: Path) -> None:
    """With k codes per image each visit draws its code, and with code noise its ε, from torch's
    global random state, which the checkpoint restores: stopped after epoch 2 and resumed, the
    run ends as the uninterrupted one (K = 2N rows of π and Ẑ)."""
    uninterrupted = run(tiny_mnist, tmp_path / "a", epochs=4, seed=0, **overrides)
    run(tiny_mnist, tmp_path / "b", epochs=2, seed=0, **overrides)
    resumed = run(tiny_mnist, tmp_path / "b", epochs=4, seed=123, ckpt=tmp_path / "b" / "checkpoints" / "last.ckpt", **overrides)
    assert resumed.num_codes == 2 * 64
    assert_same_state(resumed, uninterrupted)


def test_sigterm_through_the_cli_says_how_to_resume_and_the_resume_finishes(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    args = tiny_fit_args(tiny_mnist, run_dir, tmp_path / "lattices", "--trainer.logger", "false", "--trainer.max_epochs", "3",
                         "--trainer.callbacks+=tests.test_resume.SigTerm", "--trainer.callbacks.epoch", "1",
                         "--trainer.callbacks.batch", "2")
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert console_main(args) == 128 + 15
    finally:
        signal.signal(signal.SIGTERM, handler)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"stopped by SIGTERM in epoch 1; the run is resumable from the end of the last finished epoch: add --ckpt_path {last}" in capsys.readouterr().err
    assert torch.load(last, weights_only=False)["global_step"] == 4  # epoch 0 only; epoch 1 was cut after 3 batches
    resume = tiny_fit_args(tiny_mnist, run_dir, tmp_path / "lattices", "--trainer.logger", "false", "--trainer.max_epochs", "3",
                           "--ckpt_path", str(last))
    assert console_main(resume) == 0
    assert torch.load(last, weights_only=False)["global_step"] == 12


def test_the_frozen_loss_network_is_left_out_of_checkpoints_and_rebuilt_on_load(tiny_mnist: Path, tmp_path: Path) -> None:
    from neurosql_pl.cli import main

    run_dir = tmp_path / "run"
    main(tiny_fit_args(tiny_mnist, run_dir, tmp_path / "lattices", "--trainer.logger", "false",
                       "--trainer.max_epochs", "1", "--model.perceptual", "stlpips-alex"))
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["state_dict"] and not [k for k in checkpoint["state_dict"] if k.startswith("loss_fn.")]
    model = NeuroSQL.load_from_checkpoint(last, map_location="cpu")  # strict: every other key must fit
    fresh = NeuroSQL(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    for (key, a), (_, b) in zip(model.loss_fn.state_dict().items(), fresh.loss_fn.state_dict().items()):
        assert torch.equal(a, b), key
    assert len(model.loss_fn.state_dict()) > 10  # there was a network to leave out
