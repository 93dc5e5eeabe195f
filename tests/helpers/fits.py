"""Small NeuroSQL fits on tiny MNIST for the module's tests: the model, the fit, and callbacks that
keep for inspection the fit's cost side (feature banks, block costs) and its training inputs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from neurosql_pl import NeuroSQL
from neurosql_pl.datamodules import MNISTDataModule
from tests.helpers.models import SMALL_NEUROSQL


def small_model(tmp_path: Path, **overrides) -> NeuroSQL:
    """A NeuroSQL of `SMALL_NEUROSQL` with `overrides`, its lattices cached under tmp_path."""
    return NeuroSQL(**{**SMALL_NEUROSQL, "lattice_cache_dir": str(tmp_path / "lattices"), **overrides})


class KeepCosts(L.Callback):
    """Keeps the module's cost side (its feature banks), which it frees at the end of fit
    (callbacks run first), and every `block_costs` result of the fit in `recorded`."""

    def __init__(self) -> None:
        self.recorded: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.spied = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # after the module's on_train_start built them
        if self.spied:
            return
        self.spied = True
        costs = pl_module.assignment_costs()
        block_costs = costs.block_costs

        def spy(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            result = block_costs(samples, points)
            self.recorded.append(result.cpu().clone())
            return result

        costs.block_costs = spy

    def on_train_end(self, trainer, pl_module) -> None:
        costs = pl_module.assignment_costs()
        self.real_bank, self.fake_bank = costs.real_bank, costs.fake_bank


def fit(model: NeuroSQL, data_dir: Path, root: Path, epochs: int = 2, callbacks=(), ckpt_path: Path | None = None) -> L.Trainer:
    """Fit `model` on the MNIST files in data_dir (batches of 16) for `epochs` on the CPU, from
    `ckpt_path` when given; the trainer."""
    trainer = L.Trainer(
        max_epochs=epochs, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=list(callbacks),
    )
    datamodule = MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


class TrainingInputs(L.Callback):
    """Records, per training batch, its dataset indices, the generator's input and whether the
    step changed torch's global random state."""

    def __init__(self, generator: nn.Module) -> None:
        self.indices, self.inputs, self.drew = [], [], []
        generator.register_forward_pre_hook(self.record_input)

    def record_input(self, net: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if net.training:  # a training step's pass, not the assignment's (eval mode)
            self.inputs.append(args[0].detach().clone())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.indices.append(batch[1].clone())
        self.state = torch.get_rng_state()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.drew.append(not torch.equal(torch.get_rng_state(), self.state))
