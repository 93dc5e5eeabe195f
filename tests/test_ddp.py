"""Multi-process training: 2 CPU ranks (gloo) under Lightning's DDP keep identical per-sample state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers.ddp_fit import MODEL
from tests.helpers.idx_files import write_mnist_idx

from neurosql_pl import NeuroSQL
from neurosql_pl.assignment import check_permutation
from neurosql_pl.datamodules import MNISTDataModule

SCRIPT = Path(__file__).parent / "helpers" / "ddp_fit.py"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        pytest.param({"assign_sweeps": 2, "block_strategy": "multiscale"}, marks=pytest.mark.slow, id="multiscale"),
        pytest.param({"oversample": 2}, marks=pytest.mark.slow, id="oversample"),  # K = 2N codes
    ],
)
def test_two_ranks_keep_identical_permutations_and_codes(tmp_path: Path, overrides: dict) -> None:
    data_dir = tmp_path / "data"
    write_mnist_idx(data_dir, n_train=67, n_test=8)  # 67 = odd: DistributedSampler pads one duplicate
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(data_dir), str(out), "2", json.dumps(overrides)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for epoch in (0, 1):
        r0 = torch.load(out / f"rank0_epoch{epoch}.pt")
        r1 = torch.load(out / f"rank1_epoch{epoch}.pt")
        check_permutation(r0["assignment"], 67 * overrides.get("oversample", 1))
        for key in ("assignment", "latents", "lattice"):
            assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks after epoch {epoch}"
        for name, value in r0["generator"].items():
            assert torch.equal(value, r1["generator"][name]), f"generator {name} differs between ranks"
        # the EMA's weights too; its BatchNorm statistics are rank 0's, like the live generator's:
        # DDP broadcasts every buffer (the EMA's included) from rank 0 at each forward, so after
        # the last step of an epoch the other ranks' are briefly their own
        for name, value in r0["ema_generator"].items():
            if "running_" not in name:
                assert torch.equal(value, r1["ema_generator"][name]), f"ema_generator {name} differs between ranks"
        seen = torch.cat([r0["seen"], r1["seen"]])
        assert set(seen.tolist()) == set(range(67))  # the ranks together cover the data
        assert len(r0["seen"]) == len(r1["seen"]) == 34  # 67 padded to 68 by one duplicate
    assert not torch.equal(
        torch.load(out / "rank0_epoch0.pt")["assignment"], torch.load(out / "rank0_epoch1.pt")["assignment"]
    )  # the assignment did work
    if overrides.get("block_strategy", "random") == "random":  # blocks built from features (neighbours,
        # multiscale) depend on floating-point details such as the thread count, so one process need
        # not draw the ranks' blocks; the ranks agree because they take rank 0's
        replay_in_one_process(data_dir, out, overrides)


def replay_in_one_process(data_dir: Path, out: Path, overrides: dict) -> None:
    """Each epoch's 2-rank assignment equals one process solving all its blocks.

    From the state before the assignment and the generator it scored with, a single-process
    `assign` must reach the ranks' π and Ẑ: every block solved on either rank was applied.
    """
    datamodule = MNISTDataModule(data_dir=str(data_dir), download=False)
    datamodule.setup("fit")
    for epoch in (0, 1):
        after = torch.load(out / f"rank0_epoch{epoch}.pt")
        model = NeuroSQL(**{**MODEL, **overrides}, image_shape=(1, 28, 28), num_samples=67)
        model.generator.load_state_dict(after["generator"])
        model.lattice = after["lattice"]
        model.assignment = after["before"]["assignment"]
        model.latents = after["before"]["latents"]
        model.build_assignment_costs(datamodule.train_images)  # as in the fit: real features cached
        (callback,) = model.configure_callbacks()
        stats = callback.assign(model, epoch=epoch)
        assert stats["frac_changed"] > 0, f"no block changed in epoch {epoch}: the comparison would prove nothing"
        assert torch.equal(model.assignment, after["assignment"]), f"π after epoch {epoch} differs from one process"
        assert torch.allclose(model.latents, after["latents"], rtol=0, atol=1e-6), f"Ẑ after epoch {epoch} differs"
