"""A one-epoch CLI `fit` on every dataset, on small files written in each real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers.image_files import write_afhq, write_celeba, write_image_folder, write_nifti_folder, write_oasis

from neurosql_pl.cli import main
from neurosql_pl.run_folder import train_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"

DATASETS = {
    # name: (data config, writer, extra CLI args, image shape)
    "celeba": ("celeba", lambda root: write_celeba(root, n=20), ["--data.download", "false"], (3, 64, 64)),
    "afhq": (
        "afhq", lambda root: write_afhq(root, n_per_class=4), ["--data.download", "false", "--data.classes", "[cat, dog]"],
        (3, 64, 64),
    ),
    "oasis-analyze": ("oasis", lambda root: write_oasis(root, n_subjects=3), ["--data.slices_per_volume", "4"], (1, 64, 64)),
    "oasis-nifti": ("oasis", lambda root: write_nifti_folder(root, n=3), ["--data.slices_per_volume", "4"], (1, 64, 64)),
    "folder": ("folder", lambda root: write_image_folder(root, n=12), [], (3, 64, 64)),
}


def fit_one_epoch(config: str, data_dir: Path, tmp_path: Path, *extra: str) -> dict:
    """`neurosql fit` for one epoch of a tiny NeuroSQL on data piece `config`; the last checkpoint."""
    run = tmp_path / "run"
    model = "neurosql_unet" if config == "oasis" else "neurosql_mse"
    main([
        "fit",
        "--config", str(CONFIGS / "trainer" / "default.yaml"),
        "--config", str(CONFIGS / "model" / f"{model}.yaml"),
        "--config", str(CONFIGS / "data" / f"{config}.yaml"),
        "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--data.data_dir", str(data_dir), "--data.batch_size", "8",
        "--model.generator_width", "8", "--model.block_size", "4",
        "--model.lattice_cache_dir", str(tmp_path / "lattices"),
        *extra,
    ])
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_one_epoch_fit_on_each_dataset_layout(name: str, tmp_path: Path) -> None:
    config, writer, extra, shape = DATASETS[name]
    ckpt = fit_one_epoch(config, writer(tmp_path / "data"), tmp_path, *extra)
    run = tmp_path / "run"
    assert tuple(ckpt["hyper_parameters"]["image_shape"]) == shape
    n = ckpt["hyper_parameters"]["num_samples"]
    assert sorted(ckpt["state_dict"]["assignment"].tolist()) == list(range(n))
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    assert train_metrics(run)["epochs"] == 1


def test_hflip_through_the_cli_trains_one_code_per_image_and_mirror_image(tmp_path: Path) -> None:
    """`--data.hflip true` on a folder of 12 images: NeuroSQL holds and assigns 24 codes."""
    ckpt = fit_one_epoch("folder", write_image_folder(tmp_path / "data", n=12), tmp_path, "--data.hflip", "true")
    assert ckpt["datamodule_hyper_parameters"]["hflip"] is True
    assert ckpt["hyper_parameters"]["num_samples"] == 24
    assert sorted(ckpt["state_dict"]["assignment"].tolist()) == list(range(24))


def test_the_cli_takes_hflip_for_the_image_folders_and_refuses_it_for_mnist(tmp_path: Path, capsys) -> None:
    """Digits are not mirror-symmetric: MNIST's piece has no hflip, and the parser says so."""
    common = ["--config", str(CONFIGS / "model" / "neurosql.yaml"), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path / "run")]
    data_dir = write_image_folder(tmp_path / "data", n=4)
    for piece in ("folder", "emoji3d"):
        cli = main([*common, "--config", str(CONFIGS / "data" / f"{piece}.yaml"), "--data.data_dir", str(data_dir),
                    "--data.hflip", "true"], run=False)
        assert cli.datamodule.hflip and cli.datamodule.hparams.hflip, piece
    with pytest.raises(SystemExit) as refused:
        main([*common, "--config", str(CONFIGS / "data" / "mnist.yaml"), "--data.hflip", "true"], run=False)
    assert refused.value.code == 2 and "MNISTDataModule): Option 'hflip' is not accepted" in capsys.readouterr().err
