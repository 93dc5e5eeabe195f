"""`neurosql sample`: images out of a checkpoint (PNG files, a grid, an .npz an outside FID tool
reads), drawn with the EMA weights and reproducible by seed; bad settings leave what exists alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurosql_pl import NeuroSQL
from neurosql_pl.cli import console_main
from neurosql_pl.cli import main as cli_main
from neurosql_pl.images import to_uint8
from neurosql_pl.prior import sample_prior
from tests.helpers.cli_args import tiny_fit_args
from tests.helpers.idx_files import write_mnist_idx


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    """A tiny NeuroSQL run trained with an EMA of its generator (ema_decay 0.9): its last.ckpt."""
    root = tmp_path_factory.mktemp("sample_run")
    write_mnist_idx(root / "data", n_train=64, n_test=16)
    cli_main(tiny_fit_args(root / "data", root / "run", root / "lattices", "--trainer.logger", "false",
                           "--model.perceptual", "null", "--model.ema_decay", "0.9"))
    return root / "run" / "checkpoints" / "last.ckpt"


def test_sample_writes_pngs_grid_and_npz_of_the_ema_generator(ema_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples"
    assert console_main(["sample", "--ckpt", str(ema_run), "--n", "10", "--out", str(out), "--seed", "3"]) == 0
    assert "wrote 10 samples of neurosql_pl.NeuroSQL with the EMA weights" in capsys.readouterr().out
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(10)]
    npz = np.load(out / "samples.npz")
    images = npz["arr_0"]
    assert images.shape == (10, 28, 28, 1) and images.dtype == np.uint8 and int(npz["seed"]) == 3
    assert np.isnan(npz["truncation"])
    assert all(np.array_equal(np.asarray(Image.open(p)), images[i, ..., 0]) for i, p in enumerate(pngs))
    assert Image.open(out / "grid.png").size == (8 * 30 + 2, 2 * 30 + 2)  # 10 images: 8 per row, 2-px padding
    record = json.loads((out / "sample.json").read_text())
    assert record["ema"] is True and record["n"] == 10 and record["shape"] == [1, 28, 28]

    model = NeuroSQL.load_from_checkpoint(ema_run, map_location="cpu").eval()
    z = sample_prior(10, model.hparams.latent_dim, torch.Generator().manual_seed(3))
    with torch.no_grad():
        from_ema = to_uint8(model._generate(z, model.ema_generator.module)).permute(0, 2, 3, 1).numpy()
        from_live = to_uint8(model._generate(z, model.generator)).permute(0, 2, 3, 1).numpy()
    assert np.abs(images.astype(int) - from_ema.astype(int)).max() <= 1  # the EMA generator's images
    assert np.abs(images.astype(int) - from_live.astype(int)).max() > 1  # not the trained weights'


def test_same_seed_same_samples_and_the_default_folder_is_never_overwritten(ema_run: Path, tmp_path: Path, capsys) -> None:
    from neurosql_pl.sampling import sample_to_folder

    first = sample_to_folder(ema_run, n=6, seed=1)  # default: <run>/samples_n6_seed1
    assert Path(first["out"]) == ema_run.parents[1] / "samples_n6_seed1"
    again = sample_to_folder(ema_run, n=6, seed=1, out=tmp_path / "again")
    assert np.array_equal(np.load(Path(first["out"]) / "samples.npz")["arr_0"], np.load(tmp_path / "again" / "samples.npz")["arr_0"])
    other = sample_to_folder(ema_run, n=6, seed=2, out=tmp_path / "other", truncation=1.5)
    assert not np.array_equal(np.load(tmp_path / "other" / "samples.npz")["arr_0"], np.load(tmp_path / "again" / "samples.npz")["arr_0"])
    assert float(np.load(tmp_path / "other" / "samples.npz")["truncation"]) == 1.5

    stamp = (Path(first["out"]) / "samples.npz").stat().st_mtime_ns
    assert console_main(["sample", "--ckpt", str(ema_run), "--n", "6", "--seed", "1"]) == 1
    err = capsys.readouterr().err
    assert "samples_n6_seed1 already exists and is not empty; nothing was written" in err
    assert (Path(first["out"]) / "samples.npz").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(("flags", "message"), [
    (["--n", "0"], "n must be at least 1, got 0"),
    (["--truncation", "-1"], "truncation must be None (no truncation) or > 0"),
])
def test_impossible_settings_end_in_one_line(ema_run: Path, tmp_path: Path, capsys, flags, message) -> None:
    assert console_main(["sample", "--ckpt", str(ema_run), "--out", str(tmp_path / "s"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_truncated_checkpoint_is_named_and_nothing_is_written(ema_run: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ema_run.read_bytes()[:1000])
    assert console_main(["sample", "--ckpt", str(broken), "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {broken}" in err and "truncated or corrupt" in err
    assert not (tmp_path / "s").exists()
