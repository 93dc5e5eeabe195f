"""Command-line entry point: LightningCLI over every model and datamodule of the project.

    neurosql fit --config experiments/configs/trainer/default.yaml \
        --config experiments/configs/model/neurosql_mse.yaml --config experiments/configs/data/mnist.yaml \
        --trainer.default_root_dir runs/mnist --model.rho 0.5

(`python -m neurosql_pl` is the same command.) A `--config` value of the form KIND/NAME that is
no file here, e.g. `--config data/mnist`, names the config piece installed with the library
(`neurosql_pl.configs`: experiments/configs/KIND/NAME.yaml), so no checkout is needed:

    neurosql fit --config trainer/default --config model/neurosql_mse --config data/mnist

The run folder is `trainer.default_root_dir`: checkpoints go to `<run>/checkpoints/`
(`last.ckpt` every epoch), the resolved `config.yaml`, W&B files (`<run>/wandb/`), and
`samples.png`, `reconstructions.png`, `metrics.json` at the end (see `artifacts.py`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .artifacts import RunArtifacts
from .configs import packaged_config

DEFAULT_RUN_DIR = "runs/default"


class NeuroSQLCLI(LightningCLI):
    """LightningCLI with the run-folder conventions above and `--checkpoint.*`, `--artifacts.*` groups."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # top-k = 1 keeps the newest epoch (no monitor); last.ckpt is written with every save
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1})
        parser.add_lightning_class_args(RunArtifacts, "artifacts")
        parser.add_argument(
            "--overwrite", type=bool, default=False,
            help="let `fit` replace the checkpoints of an earlier run in the same run folder",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or DEFAULT_RUN_DIR
        config.trainer.default_root_dir = root
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")
        if self.subcommand == "fit":
            check_writable(Path(root))
            protect_earlier_run(Path(config.checkpoint.dirpath), config.ckpt_path, config.overwrite)
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "save_dir" in init_args and init_args.save_dir in (None, "."):
            init_args.save_dir = root


def check_writable(run_dir: Path) -> None:
    """Fail before training when the run folder cannot be created or written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SystemExit(
            f"error: cannot write to the run folder {run_dir} ({error.strerror or error}); "
            "choose a writable one with --trainer.default_root_dir DIR (make train OUT=DIR)"
        ) from error


def protect_earlier_run(checkpoint_dir: Path, ckpt_path: str | None, overwrite: bool) -> None:
    """Refuse to start a fresh run over the checkpoints of an earlier one (unless asked)."""
    earlier = sorted(checkpoint_dir.glob("*.ckpt")) if checkpoint_dir.is_dir() else []
    if earlier and ckpt_path is None and not overwrite:
        raise SystemExit(
            f"error: {checkpoint_dir} already holds checkpoints of an earlier run ({earlier[0].name}). "
            f"Resume it with --ckpt_path {checkpoint_dir / 'last.ckpt'} (make train ARGS='--ckpt_path …'), "
            "choose another run folder (--trainer.default_root_dir DIR, or make train OUT=DIR), "
            "or pass --overwrite true to replace them."
        )


def expand_config_names(args: Sequence[str]) -> list[str]:
    """`--config KIND/NAME` (also `-c`, `--config=`) → the packaged piece's file, when no file
    of that name exists; every other argument is kept as it is."""
    out = list(args)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag in ("-c", "--config") and eq:
            out[i] = f"{flag}={_config_file(value)}"
        elif arg in ("-c", "--config") and i + 1 < len(out):
            out[i + 1] = _config_file(out[i + 1])
    return out


def _config_file(value: str) -> str:
    packaged = None if os.path.exists(value) else packaged_config(value)
    return value if packaged is None else str(packaged)


def main(args: list[str] | None = None, run: bool = True) -> NeuroSQLCLI:
    """Run the CLI (`args` as on the command line; None reads sys.argv)."""
    # The perceptual network is frozen in eval mode on purpose; NeuroSQL has no validation step.
    warnings.filterwarnings("ignore", r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", r".*val_dataloader.*no `validation_step`.*")
    return NeuroSQLCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=expand_config_names(sys.argv[1:] if args is None else args),
        run=run,
        auto_configure_optimizers=False,
    )


def console_main() -> int:
    """The `neurosql` command: the CLI on sys.argv; exit status 0 once it returns."""
    main()
    return 0
