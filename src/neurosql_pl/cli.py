"""The `neurosql` command (= `python -m neurosql_pl`): LightningCLI over every model and
datamodule of the project, and the subcommands that run one function (`commands.py`).

    neurosql fit --config experiments/configs/trainer/default.yaml \
        --config experiments/configs/model/neurosql_mse.yaml --config experiments/configs/data/mnist.yaml \
        --trainer.default_root_dir runs/mnist --model.rho 0.5
    neurosql sample --ckpt runs/mnist/checkpoints/last.ckpt --n 1000      # images out of a checkpoint
    neurosql evaluate --ckpt runs/mnist/checkpoints/last.ckpt --n 1000    # scores: eval.json
    neurosql prepare celeba                                               # download or check data

`fit`, `validate`, `test` and `predict` are LightningCLI's. An error of the user's (a
`neurosql_pl.errors.UserError`: missing or corrupt data, a checkpoint that does not fit, an
impossible setting) ends in one 'error: …' message and exit status 1, wherever it was raised;
a wrong option in one 'error: …' line and status 2; any other exception keeps its traceback.

A `--config` value of the form KIND/NAME that is no file here, e.g. `--config data/mnist`, names
the config piece installed with the library (`neurosql_pl.configs`: experiments/configs/KIND/NAME.yaml),
so no checkout is needed:

    neurosql fit --config trainer/default --config model/neurosql_mse --config data/mnist

The run folder is `trainer.default_root_dir`: checkpoints go to `<run>/checkpoints/`
(`last.ckpt` every epoch), the resolved `config.yaml`, W&B files (`<run>/wandb/`), and
`samples.png`, `reconstructions.png`, `metrics.json` at the end (see `artifacts.py`). A
`{trial}` in it becomes the W&B run id, so that every trial of a sweep has its own folder.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .artifacts import RunArtifacts
from .cli_errors import OneLineErrors, check_resume_checkpoint, check_writable, protect_earlier_run, root_cause
from .commands import run_command
from .configs import packaged_config
from .loggers import checkpoint_run_id, folder_run_id, new_run_id
from .preemption import SIGTERMException, StopOnSigterm

AUTO_WANDB = "neurosql_pl.loggers.AutoWandbLogger"
DEFAULT_RUN_DIR = "runs/default"
DESCRIPTION = (
    "NeuroSQL's command. Training: fit, validate, test, predict (LightningCLI). Out of a checkpoint or "
    "for data: sample (images), evaluate (scores: eval.json), prepare (download or check a data config); "
    "`neurosql sample --help` lists the options of sample, and so on."
)
FUNCTION_COMMANDS = ("sample", "evaluate", "prepare")  # beside LightningCLI's: they run one function (commands.py)
TRIAL = "{trial}"  # in --trainer.default_root_dir: one folder per sweep trial (see trial_folder)


class NeuroSQLParser(OneLineErrors, LightningArgumentParser):
    """The CLI's parser: a wrong option ends in one short 'error: …' line (exit status 2), not in the
    whole usage text and jsonargparse's 'Union subtypes' report."""

    def help_command(self) -> str:
        return "neurosql fit --help"


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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; then, before Lightning reads ``--ckpt_path`` for its hyper-parameters, check that it is whole."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand in ("fit", "validate", "test", "predict"):
            check_resume_checkpoint(self.config[subcommand].get("ckpt_path"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = trial_folder(config.trainer.default_root_dir or DEFAULT_RUN_DIR)
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
        if self.subcommand == "fit" and getattr(logger, "class_path", None) == AUTO_WANDB and init_args.id is None:
            # a resume continues the W&B run of its checkpoint (else of its run folder)
            resumed = config.ckpt_path and (checkpoint_run_id(config.ckpt_path) or folder_run_id(init_args.save_dir))
            init_args.id = resumed or None

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; an impossible setting (a constructor's error, which
        jsonargparse wraps in a 'Union subtypes' report with a Namespace dump) ends in its own line."""
        try:
            super().instantiate_classes()
        except Exception as err:  # noqa: BLE001 - only wrapped errors are shortened; others pass through
            cause = root_cause(err)
            if cause is err:
                raise
            raise SystemExit(f"error: {cause}") from err


def trial_folder(root: str) -> str:
    """``{trial}`` in the run folder → this trial's W&B run id (WANDB_RUN_ID, which a sweep agent
    sets; else a new id): every sweep trial writes its own folder, and logs to that W&B run."""
    if TRIAL not in root:
        return root
    if not os.environ.get("WANDB_RUN_ID"):
        # An environment write on purpose, the one way to reach the other DDP processes: Lightning's
        # subprocess launcher starts ranks 1… by re-running this same command line (sys.argv, still
        # with `{trial}`) with a copy of os.environ, and they pick the id up here, so every rank
        # resolves the same folder. It is the variable a sweep agent sets, which AutoWandbLogger reads.
        os.environ["WANDB_RUN_ID"] = new_run_id()
    return root.replace(TRIAL, os.environ["WANDB_RUN_ID"])


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
    packaged = None if os.path.isfile(value) else packaged_config(value)
    return value if packaged is None else str(packaged)


def main(args: list[str] | None = None, run: bool = True) -> NeuroSQLCLI:
    """Run the CLI (`args` as on the command line; None reads sys.argv)."""
    # The perceptual network is frozen in eval mode on purpose; NeuroSQL has no validation step.
    warnings.filterwarnings("ignore", r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", r".*val_dataloader.*no `validation_step`.*")
    warnings.filterwarnings("ignore", r".*LightningCLI's args parameter is intended.*")  # `neurosql`: expanded sys.argv
    return NeuroSQLCLI(
        parser_class=NeuroSQLParser,
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "neurosql", "description": DESCRIPTION},
        args=expand_config_names(sys.argv[1:] if args is None else args),
        run=run,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [StopOnSigterm()]},  # SIGTERM: stop after the batch (preemption.py)
    )


def console_main(argv: Sequence[str] | None = None) -> int:
    """The `neurosql` command: `sample`, `evaluate`, `prepare` (their modules' ``command``), else
    the LightningCLI; the exit status. A UserError is one 'error: …' message (status 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = function_command(args[0]) if args else None
    return run_command(command, args[1:]) if command else run_command(lightning_command, args)


def function_command(name: str) -> Callable[[list[str]], int] | None:
    """The ``command(argv)`` of `neurosql NAME` for NAME in FUNCTION_COMMANDS (imported only when
    asked for, so that `neurosql fit` does not load them), else None."""
    if name == "sample":
        from .sampling import command
    elif name == "evaluate":
        from .evaluate import command
    elif name == "prepare":
        from .datamodules.prepare import command
    else:
        return None
    return command


def lightning_command(args: list[str]) -> int:
    """`neurosql fit|validate|test|predict …`: the exit status."""
    try:
        main(args)
    except SIGTERMException:  # StopOnSigterm printed how to resume
        return 128 + 15  # the shell's status for a process ended by SIGTERM
    return 0
