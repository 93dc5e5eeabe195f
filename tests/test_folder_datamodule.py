"""ImageFolderDataModule on a tiny folder of assorted images: the seeded validation split and
the errors for a missing or empty folder."""

from __future__ import annotations

import pytest

from neurosql_pl.datamodules import DatasetNotFoundError, ImageFolderDataModule
from neurosql_pl.datamodules.images import list_image_files
from tests.helpers.image_datamodules import N_FOLDER
from tests.helpers.image_files import write_image_folder


def test_folder_val_fraction_is_a_seeded_disjoint_split(tmp_path):
    folder = write_image_folder(tmp_path, N_FOLDER)
    every = list_image_files(folder)

    def split(seed):
        dm = ImageFolderDataModule(data_dir=str(folder), image_size=8, val_fraction=0.25, seed=seed)
        dm.setup("fit")
        return dm, {p for p in dm.train_files}, set(dm.val_set.dataset.paths)

    dm, train, val = split(0)
    assert len(val) == 3 and len(train) == dm.num_samples == 9
    assert train.isdisjoint(val) and train | val == set(every)
    assert dm.train_files == sorted(dm.train_files, key=lambda p: p.relative_to(folder).as_posix())
    assert split(0)[2] == val and split(1)[2] != val
    assert len(dm.test_set) == 3


def test_folder_missing_or_empty_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        ImageFolderDataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()
    assert "data_dir" in str(info.value)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetNotFoundError, match="no image files") as info:
        ImageFolderDataModule(data_dir=str(empty)).setup("fit")
    assert str(empty) in str(info.value) and ".png" in str(info.value)
