"""Tiny image datamodules for the tests: one of each kind (CelebA, AFHQ, image folder), set up
on files written in its real on-disk layout under a test's tmp_path.

    from tests.helpers.image_datamodules import KINDS, N_TRAIN, make, one_epoch
    dm = make("celeba", tmp_path, image_size=8)    # prepared and set up for "fit"
    images, indices = one_epoch(dm)                # the whole training loader, concatenated
"""

from __future__ import annotations

from pathlib import Path

import torch

from neurosql_pl.datamodules import AFHQDataModule, CelebADataModule, ImageFolderDataModule
from tests.helpers.image_files import celeba_partition, write_afhq, write_celeba, write_image_folder

N_CELEBA = 30  # 18 train, 6 valid, 6 test (celeba_partition)
N_PER_CLASS, N_VAL_PER_CLASS = 4, 2
N_FOLDER = 12


def make(kind: str, root: Path, **kwargs):
    """A set-up datamodule of `kind` on a tiny dataset written under `root`."""
    kwargs = {"batch_size": 5, "image_size": 16, **kwargs}
    if kind == "celeba":
        dm = CelebADataModule(data_dir=str(write_celeba(root, N_CELEBA)), download=False, **kwargs)
    elif kind == "afhq":
        dm = AFHQDataModule(data_dir=str(write_afhq(root, N_PER_CLASS, N_VAL_PER_CLASS)), download=False, **kwargs)
    else:
        dm = ImageFolderDataModule(data_dir=str(write_image_folder(root, N_FOLDER)), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


N_TRAIN = {"celeba": celeba_partition(N_CELEBA).count(0), "afhq": 3 * N_PER_CLASS, "folder": N_FOLDER}
KINDS = tuple(N_TRAIN)


def one_epoch(dm) -> tuple[torch.Tensor, torch.Tensor]:
    images, indices = zip(*dm.train_dataloader())
    return torch.cat(images), torch.cat(indices)
