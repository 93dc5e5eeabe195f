"""Shared test settings: CPU only, W&B offline and quiet, no network, tiny data in tmp_path."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as idx_files

from idx_files import write_mnist_idx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def offline(*args, **kwargs):
    raise OSError("network access is disabled in the tests")


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection in this process fail at once."""
    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
CONFIGS = REPO / "experiments" / "configs"


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A data_dir holding 64 training and 16 test MNIST-format images (real idx layout)."""
    data_dir = tmp_path / "data"
    write_mnist_idx(data_dir, n_train=64, n_test=16)
    return data_dir


def tiny_fit_args(data_dir: Path, run_dir: Path, lattice_dir: Path, *extra: str) -> list[str]:
    """CLI arguments for a small, fast `fit` on tiny MNIST with the project's own config pieces."""
    return [
        "fit",
        "--config", str(CONFIGS / "trainer" / "default.yaml"),
        "--config", str(CONFIGS / "model" / "neurosql_lpips.yaml"),
        "--config", str(CONFIGS / "data" / "mnist.yaml"),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
        "--data.data_dir", str(data_dir),
        "--data.batch_size", "16",
        "--data.download", "false",
        "--model.block_size", "16",
        "--model.generator_width", "8",
        "--model.lattice_cache_dir", str(lattice_dir),
        *extra,
    ]
