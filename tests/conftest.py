"""Shared test settings: CPU only, W&B offline and quiet, no network, tiny data in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

from tests.helpers.idx_files import write_mnist_idx  # noqa: E402


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A data_dir holding 64 training and 16 test MNIST-format images (real idx layout)."""
    data_dir = tmp_path / "data"
    write_mnist_idx(data_dir, n_train=64, n_test=16)
    return data_dir
