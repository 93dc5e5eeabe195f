"""Resuming: a run stopped (cleanly or by Ctrl-C mid-epoch) and resumed from its last checkpoint
continues exactly as an uninterrupted run does (deterministic mode), the EMA of the generator's
weights included."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL


class CtrlC(L.Callback):
    """Raises KeyboardInterrupt in the middle of the given epoch, as Ctrl-C would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


def run(data_dir: Path, root: Path, epochs: int, seed: int, ckpt: Path | None = None, callbacks=()) -> NeuroSQL:
    L.seed_everything(seed)
    model = NeuroSQL(
        latent_dim=4, generator_width=8, block_size=16, rho=0.5, perceptual=None, pixel="l2", ema_decay=0.9,
        lattice_cache_dir=str(root.parent / "lattices"),
    )
    trainer = L.Trainer(
        max_epochs=epochs, deterministic=True, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=1), *callbacks],
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False), ckpt_path=ckpt)
    return model


@pytest.mark.parametrize("stop", ["after epoch 2", "ctrl-c in epoch 3"])
def test_resumed_run_equals_uninterrupted_run(stop: str, tiny_mnist: Path, tmp_path: Path) -> None:
    uninterrupted = run(tiny_mnist, tmp_path / "a", epochs=4, seed=0)

    if stop == "after epoch 2":
        run(tiny_mnist, tmp_path / "b", epochs=2, seed=0)
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
    for name in ("lattice", "assignment", "latents"):
        assert torch.equal(getattr(resumed, name), getattr(uninterrupted, name)), name
    for (key, a), (_, b) in zip(uninterrupted.generator.state_dict().items(), resumed.generator.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), key
    assert int(resumed.ema_generator.n_averaged) == int(uninterrupted.ema_generator.n_averaged) == 1 + 16
    for (key, a), (_, b) in zip(uninterrupted.ema_generator.state_dict().items(), resumed.ema_generator.state_dict().items()):
        assert torch.equal(a, b), key
