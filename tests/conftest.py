"""Shared test settings: CPU only, W&B offline and quiet, no network, tiny data in tmp_path.

The environment is set here, at import, so that every process a test starts inherits it too:
WANDB_MODE is forced to "offline" (a user's own WANDB_MODE=online must never send a test run
to the W&B servers). The network is blocked in this process for every test (`no_network`,
tests/helpers/network.py); connections to this machine (loopback, Unix sockets) still work.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

from tests.helpers.idx_files import write_mnist_idx  # noqa: E402
from tests.helpers.network import block_network  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with the network blocked (loopback and Unix sockets allowed) and W&B
    offline: Lightning's WandbLogger rewrites WANDB_MODE (to "dryrun") in the process when an
    offline run starts, so it is set again before each test."""
    block_network(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A data_dir holding 64 training and 16 test MNIST-format images (real idx layout)."""
    data_dir = tmp_path / "data"
    write_mnist_idx(data_dir, n_train=64, n_test=16)
    return data_dir
