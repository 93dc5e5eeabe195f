"""A real 2-process DDP fit on CPU (gloo), launched the way users launch it: run as a script.

    python tests/helpers/ddp_fit.py DATA_DIR OUT_DIR [EPOCHS [MODEL_JSON]]

Lightning's "ddp" strategy starts the second rank by re-running this script. Each rank writes
OUT_DIR/rank{r}_epoch{e}.pt after every assignment (π, Ẑ, the generator, its EMA and the indices it
trained on in that epoch, and π, Ẑ as they were before the assignment); tests/test_ddp.py
compares the ranks, and replays each assignment in one process. MODEL_JSON overrides settings
of MODEL, e.g. '{"assign_sweeps": 2}'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL


# tests/helpers/models.py's SMALL_NEUROSQL (this script runs alone, outside the tests package), with m = 8
MODEL = dict(latent_dim=4, generator_width=8, block_size=8, perceptual=None, pixel="l2", block_strategy="random", init="random",
             cost_outputs="fresh", rho=0.5, ema_decay=0.9)


class StateRecorder(L.Callback):
    """Collects the dataset indices this rank trains on; `save` writes the per-sample state.

    A trainer callback: its epoch-end hook runs before the model's own callbacks (the
    assignment), so it keeps π and Ẑ as the assignment found them.
    """

    def __init__(self, out: Path) -> None:
        self.out, self.seen, self.before = out, [], {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.before = {"assignment": pl_module.assignment.cpu().clone(), "latents": pl_module.latents.cpu().clone()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(batch[1].cpu())

    def save(self, trainer, pl_module) -> None:
        state = {
            "assignment": pl_module.assignment.cpu().clone(),
            "latents": pl_module.latents.cpu().clone(),
            "lattice": pl_module.lattice.cpu().clone(),
            "seen": torch.cat(self.seen),
            "generator": {k: v.cpu().clone() for k, v in pl_module.generator.state_dict().items()},
            "ema_generator": {k: v.cpu().clone() for k, v in pl_module.ema_generator.state_dict().items()},
            "before": self.before,
        }
        torch.save(state, self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")


class AfterAssignment(L.Callback):
    """Placed after the model's own callbacks, so its epoch-end hook sees the updated state."""

    def __init__(self, recorder: StateRecorder) -> None:
        self.recorder = recorder

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.recorder.save(trainer, pl_module)


def main() -> None:
    data_dir, out = sys.argv[1], Path(sys.argv[2])
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    out.mkdir(parents=True, exist_ok=True)
    model = NeuroSQL(**{**MODEL, **overrides}, lattice_cache_dir=str(out / "lattices"))
    recorder = StateRecorder(out)
    model.configure_callbacks = lambda: [*NeuroSQL.configure_callbacks(model), AfterAssignment(recorder)]
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=epochs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=data_dir, batch_size=8, download=False))


if __name__ == "__main__":
    main()
