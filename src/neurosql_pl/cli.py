"""Command-line entry point: LightningCLI over every model and datamodule of the project.

    python -m neurosql_pl fit --config experiments/configs/trainer/default.yaml \
        --config experiments/configs/model/neurosql.yaml --config experiments/configs/data/mnist.yaml \
        --trainer.default_root_dir runs/mnist --model.rho 0.5

The run folder is `trainer.default_root_dir`: checkpoints go to `<run>/checkpoints/`
(`last.ckpt` every epoch), the resolved `config.yaml`, W&B files (`<run>/wandb/`), and
`samples.png`, `reconstructions.png`, `metrics.json` at the end (see `artifacts.py`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .artifacts import RunArtifacts

DEFAULT_RUN_DIR = "runs/default"


class NeuroSQLCLI(LightningCLI):
    """LightningCLI with the run-folder conventions above and `--checkpoint.*`, `--artifacts.*` groups."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0})
        parser.add_lightning_class_args(RunArtifacts, "artifacts")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or DEFAULT_RUN_DIR
        config.trainer.default_root_dir = root
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "save_dir" in init_args and init_args.save_dir in (None, "."):
            init_args.save_dir = root


def main(args: list[str] | None = None, run: bool = True) -> NeuroSQLCLI:
    """Run the CLI (`args` as on the command line; None reads sys.argv)."""
    return NeuroSQLCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )
