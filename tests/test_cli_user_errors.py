"""The `neurosql` command, run as a user runs it: an error of the user's raised inside `fit`
(bad data, a checkpoint that does not fit, an impossible setting found at setup) ends in one
'error: …' message and exit status 1, without a traceback; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers.cli_args import CONFIGS, REPO, tiny_fit_args
from tests.helpers.failing_callback import MESSAGE
from tests.helpers.image_files import picture, save_image
from tests.helpers.idx_files import write_mnist_idx
from torch.utils.data import DataLoader, Dataset

from neurosql_pl.cli import main
from neurosql_pl.cli_errors import user_error_line
from neurosql_pl.datamodules import ChannelMismatchError

FAST = ("--trainer.logger", "false", "--model.perceptual", "null")


def neurosql(*args: str) -> subprocess.CompletedProcess:
    """`python -m neurosql_pl ARGS…` (= `neurosql ARGS…`) in the repository, its output captured."""
    return subprocess.run([sys.executable, "-m", "neurosql_pl", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The 'error: …' line `done` ended with, after checking status 1 and no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: "), output
    return last


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> dict[str, Path]:
    """Tiny MNIST files and a one-epoch run on all 64 of them: its last.ckpt."""
    root = tmp_path_factory.mktemp("resume")
    write_mnist_idx(root / "data", n_train=64, n_test=16)
    main(tiny_fit_args(root / "data", root / "run", root / "lattices", *FAST, "--trainer.max_epochs", "1"))
    return {"root": root, "data": root / "data", "ckpt": root / "run" / "checkpoints" / "last.ckpt"}


def test_a_grey_image_with_channels_3_is_one_line(tmp_path: Path) -> None:
    grey = tmp_path / "grey"
    for k in range(6):
        save_image(grey / f"img_{k}.png", picture(k, 20, 20), mode="L")
    done = neurosql(
        "fit", "--config", str(CONFIGS / "trainer" / "default.yaml"), "--config", str(CONFIGS / "model" / "neurosql_mse.yaml"),
        "--config", str(CONFIGS / "data" / "folder.yaml"), "--data.data_dir", str(grey), "--data.image_size", "16",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false", "--model.block_size", "4",
        "--model.generator_width", "8", "--model.lattice_cache_dir", str(tmp_path / "lattices"),
    )
    line = one_line_error(done)
    assert "img_0.png: a grayscale image" in line and "channels=3" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_with_another_n_is_one_line_and_keeps_the_checkpoint(mnist_run: dict[str, Path], tmp_path: Path) -> None:
    before = mnist_run["ckpt"].read_bytes()
    done = neurosql(*tiny_fit_args(mnist_run["data"], tmp_path / "run", mnist_run["root"] / "lattices", *FAST,
                                   "--ckpt_path", str(mnist_run["ckpt"]), "--data.subset", "32"))
    line = one_line_error(done)
    assert "N=64" in line and "N=32" in line and "subset" in line
    assert mnist_run["ckpt"].read_bytes() == before


def test_too_few_training_images_for_the_model_is_one_line(mnist_run: dict[str, Path], tmp_path: Path) -> None:
    done = neurosql(*tiny_fit_args(mnist_run["data"], tmp_path / "run", tmp_path / "lattices", *FAST, "--data.subset", "1"))
    assert one_line_error(done).startswith("error: NeuroSQL needs at least 2 training samples, got 1")


def test_missing_data_prints_its_whole_layout_without_a_traceback(tmp_path: Path) -> None:
    done = neurosql(*tiny_fit_args(tmp_path / "nowhere", tmp_path / "run", tmp_path / "lattices", *FAST))
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    message = done.stderr[done.stderr.index("error: "):]
    assert message.startswith("error: MNIST not found:")
    assert "Put these four" in message and "t10k-labels-idx1-ubyte" in message  # the whole layout, not one line


def test_an_unexpected_exception_keeps_its_traceback(mnist_run: dict[str, Path], tmp_path: Path) -> None:
    done = neurosql(*tiny_fit_args(mnist_run["data"], tmp_path / "run", tmp_path / "lattices", *FAST,
                                   "--trainer.callbacks+=tests.helpers.failing_callback.FailOnFitStart"))
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == f"RuntimeError: {MESSAGE}"
    assert not any(line.startswith("error:") for line in done.stderr.splitlines())


class _GreyFile(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> torch.Tensor:
        raise ChannelMismatchError("x.png: a grayscale image,\nbut channels=3")


def test_an_error_from_a_data_loader_worker_is_its_own_message() -> None:
    """A DataLoader worker's error comes back with the worker's traceback in its message."""
    with pytest.raises(ChannelMismatchError) as info:
        next(iter(DataLoader(_GreyFile(), num_workers=1)))
    assert "Original Traceback" in str(info.value)
    assert user_error_line(info.value) == "error: x.png: a grayscale image,\nbut channels=3"
    assert user_error_line(ChannelMismatchError("bad"), rank=1) == "error (rank 1): bad"
