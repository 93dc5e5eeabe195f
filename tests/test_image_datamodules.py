"""The machinery every image-file datamodule shares (CelebA, AFHQ, image folder), each kind on
tiny files in its real on-disk layout: the (image, index) contract, preloading and the disk
cache, subsets, decoding, corrupt files, the datamodule protocol and the train/val split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neurosql_pl.datamodules import (
    CelebADataModule,
    ChannelMismatchError,
    CorruptFileError,
    ImageFolderDataModule,
    MNISTDataModule,
)
from neurosql_pl.datamodules.images import ImageSpec, list_image_files
from neurosql_pl.datamodules.splits import split_train_val
from tests.helpers.idx_files import write_mnist_idx
from tests.helpers.image_datamodules import KINDS, N_FOLDER, N_TRAIN, make, one_epoch
from tests.helpers.image_files import picture, save_image, truncate, write_image_folder


# ----------------------------------------------------------------------------- the (image, index) contract


@pytest.mark.parametrize("budget", [2048, 0], ids=["preloaded", "on-demand"])
@pytest.mark.parametrize("kind", KINDS)
def test_one_epoch_yields_every_index_once_with_its_image(tmp_path, kind, budget):
    """Over an epoch the train loader yields each i in [0, N) once, paired with train_images()[i];
    images are float32 (C, S, S) in [-1, 1]; image_shape is known before setup."""
    dm = make(kind, tmp_path, memory_budget_mb=budget)
    assert dm.image_shape == (3, 16, 16) and dm.preloaded == (budget > 0)
    n = N_TRAIN[kind]
    assert dm.num_samples == n == len(dm.train_files)
    images, indices = one_epoch(dm)
    assert images.dtype == torch.float32 and images.shape == (n, 3, 16, 16)
    assert indices.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1 and images.min() < 0 < images.max()
    assert torch.equal(indices.sort().values, torch.arange(n))
    assert not torch.equal(indices, torch.arange(n))  # shuffled
    torch.testing.assert_close(images, dm.train_images(indices), rtol=0, atol=0)
    torch.testing.assert_close(dm.train_images(), dm.train_images(torch.arange(n)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_train_images_at_indices_are_the_decoded_files_in_that_order(tmp_path, kind):
    dm = make(kind, tmp_path)
    idx = torch.tensor([3, 0, 3, 1])
    spec = ImageSpec(3, 16, dm.spec.crop_size)
    expected = torch.stack([torch.from_numpy(spec.decode(dm.train_files[i])) for i in idx]).float() / 127.5 - 1
    torch.testing.assert_close(dm.train_images(idx), expected, rtol=0, atol=0)
    assert dm.train_images([]).shape == (0, 3, 16, 16)
    with pytest.raises(IndexError, match=rf"\[0, {dm.num_samples}\)"):
        dm.train_images(torch.tensor([dm.num_samples]))
    with pytest.raises(TypeError, match="integer"):
        dm.train_images(torch.tensor([0.0]))


def test_preloaded_and_on_demand_serve_identical_images_and_the_disk_cache_is_reused(tmp_path, monkeypatch):
    """The decoded training set is cached under <root>/.neurosql_cache; a second setup reads it
    without decoding a single file, and equals the on-demand path bit for bit."""
    first = make("celeba", tmp_path)
    cached = list((tmp_path / "celeba" / ".neurosql_cache").glob("train-*.pt"))
    assert len(cached) == 1
    on_demand = CelebADataModule(data_dir=str(tmp_path), image_size=16, memory_budget_mb=0, download=False)
    on_demand.setup("fit")
    assert not on_demand.preloaded

    def no_decoding(self, path):
        raise AssertionError("decoded a file although the cache holds it")

    monkeypatch.setattr(ImageSpec, "decode", no_decoding)
    second = CelebADataModule(data_dir=str(tmp_path), image_size=16, download=False)
    second.setup("fit")
    assert second.preloaded
    monkeypatch.undo()
    torch.testing.assert_close(second.train_images(), first.train_images(), rtol=0, atol=0)
    images, indices = one_epoch(second)  # the loader serves the memory-mapped cache
    torch.testing.assert_close(images, first.train_images(indices), rtol=0, atol=0)
    torch.testing.assert_close(on_demand.train_images(), first.train_images(), rtol=0, atol=0)


def test_preloading_in_worker_processes_decodes_the_same_images(tmp_path):
    serial = make("folder", tmp_path, disk_cache=False)
    parallel = ImageFolderDataModule(data_dir=str(tmp_path / "images"), image_size=16, num_workers=2, disk_cache=False)
    parallel.setup("fit")
    assert parallel.preloaded
    torch.testing.assert_close(parallel.train_images(), serial.train_images(), rtol=0, atol=0)


def test_another_image_size_does_not_reuse_the_cache(tmp_path):
    make("folder", tmp_path, image_size=16)
    dm = ImageFolderDataModule(data_dir=str(tmp_path / "images"), image_size=8)
    dm.setup("fit")
    assert dm.train_images().shape == (N_FOLDER, 3, 8, 8)
    assert len(list((tmp_path / "images" / ".neurosql_cache").glob("*.pt"))) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_subset_first_and_random(tmp_path, kind):
    """subset k: "first" keeps training images 0..k-1, "random" k seeded distinct ones, sorted."""
    full = make(kind, tmp_path / "full")
    first = make(kind, tmp_path / "first", subset=5)
    assert first.num_samples == 5 and torch.equal(first.train_indices, torch.arange(5))
    rel = lambda dm: [p.relative_to(dm.data_dir).as_posix() for p in dm.train_files]  # noqa: E731
    assert rel(first) == rel(full)[:5]
    a, b, c = (make(kind, tmp_path / f"random{s}{t}", subset=5, subset_mode="random", seed=s) for s, t in ((0, 0), (0, 1), (1, 0)))
    assert torch.equal(a.train_indices, b.train_indices) and not torch.equal(a.train_indices, c.train_indices)
    idx = a.train_indices
    assert torch.all(idx[1:] > idx[:-1])
    assert rel(a) == [rel(full)[i] for i in idx]
    torch.testing.assert_close(a.train_images(), full.train_images(idx), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"1\.\."):
        make(kind, tmp_path / "too-many", subset=N_TRAIN[kind] + 1)


# ----------------------------------------------------------------------------- decoding


def test_decoding_crops_the_centre_square_and_resizes(tmp_path):
    """A 178 × 218 image whose top and bottom 20 rows are red/blue and whose centre is green:
    the 178 px centre crop keeps only green; crop_size=None on a 218 × 178 image likewise."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[:, :, 1] = 255
    pixels[:20] = (255, 0, 0)
    pixels[-20:] = (0, 0, 255)
    path = save_image(tmp_path / "tall.png", pixels)
    out = ImageSpec(3, 32, 178).decode(path)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert out[1].min() == 255 and out[0].max() == 0 and out[2].max() == 0
    wide = save_image(tmp_path / "wide.png", pixels.transpose(1, 0, 2))
    assert np.array_equal(ImageSpec(3, 32, None).decode(wide), out.transpose(0, 2, 1))


def test_channels_1_converts_to_luminance_and_a_grayscale_file_with_channels_3_is_an_error(tmp_path):
    folder = write_image_folder(tmp_path, 4)
    gray = ImageFolderDataModule(data_dir=str(folder), image_size=8, channels=1)
    gray.setup("fit")
    assert gray.image_shape == (1, 8, 8) and gray.train_images().shape == (4, 1, 8, 8)
    bad = save_image(folder / "a" / "gray.png", picture(99, 20, 20), mode="L")
    with pytest.raises(ChannelMismatchError, match="channels=1") as info:
        ImageFolderDataModule(data_dir=str(folder), image_size=8, channels=3).setup("fit")
    assert str(bad) in str(info.value) and "grayscale" in str(info.value)
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolderDataModule(data_dir=str(folder), channels=2)


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_image_names_the_file_at_setup_when_preloaded(tmp_path, kind):
    dm = make(kind, tmp_path, memory_budget_mb=0)
    path = truncate(dm.train_files[2])
    fresh = type(dm)(**{**dm.hparams, "memory_budget_mb": 2048})
    with pytest.raises(CorruptFileError, match="truncated or corrupt") as info:
        fresh.setup("fit")
    assert str(path) in str(info.value)


def test_truncated_image_names_the_file_when_served_on_demand(tmp_path):
    dm = make("afhq", tmp_path, memory_budget_mb=0)
    path = truncate(dm.train_files[1])
    with pytest.raises(CorruptFileError) as info:
        one_epoch(dm)
    assert str(path) in str(info.value)
    with pytest.raises(CorruptFileError, match=path.name):
        dm.train_images(torch.tensor([1]))


def test_empty_image_file_is_reported_at_setup(tmp_path):
    dm = make("celeba", tmp_path, memory_budget_mb=0)
    dm.train_files[0].write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty") as info:
        CelebADataModule(data_dir=str(tmp_path), memory_budget_mb=0, download=False).setup("fit")
    assert str(dm.train_files[0]) in str(info.value)


def test_list_image_files_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    folder = write_image_folder(tmp_path, 8)
    (folder / "notes.txt").write_text("not an image")
    save_image(folder / ".hidden" / "x.png", picture(0, 8, 8))
    save_image(folder / "a" / "._x.jpg", picture(0, 8, 8))
    found = [p.relative_to(folder).as_posix() for p in list_image_files(folder)]
    assert found == sorted(found) and len(found) == 8
    assert {Path(f).suffix for f in found} == {".png", ".jpg", ".bmp", ".JPG"}
    assert any(f.startswith("a/deep/") for f in found)


# ----------------------------------------------------------------------------- protocol details


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_data_assigns_no_state_and_hparams_are_saved(tmp_path, kind):
    dm = make(kind, tmp_path)  # writes the files
    fresh = type(dm)(**{**dm.hparams, "batch_size": 7, "seed": 3})
    before = dict(vars(fresh))
    fresh.prepare_data()
    assert vars(fresh).keys() == before.keys() and all(vars(fresh)[k] is v for k, v in before.items())
    with pytest.raises(AttributeError, match="setup"):
        fresh.train_images()
    assert fresh.hparams.batch_size == 7 and fresh.hparams.seed == 3 and fresh.hparams.image_size == 16


def test_invalid_arguments_are_rejected():
    for kwargs, match in (
        ({"image_size": 0}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"subset_mode": "last"}, "subset_mode"),
        ({"memory_budget_mb": -1}, "memory_budget_mb"),
        ({"crop_size": 0}, "crop_size"),
    ):
        with pytest.raises(ValueError, match=match):
            CelebADataModule(**kwargs)
    with pytest.raises(ValueError, match="val_fraction"):
        ImageFolderDataModule(val_fraction=1.0)


def test_mnist_train_images_takes_indices_too(tmp_path):
    """The protocol's train_images(indices) holds for MNIST as well (no argument = all)."""
    write_mnist_idx(tmp_path, n_train=20, n_test=5)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False, batch_size=6)
    dm.setup("fit")
    images, indices = one_epoch(dm)
    torch.testing.assert_close(dm.train_images(indices), images, rtol=0, atol=0)
    torch.testing.assert_close(dm.train_images(torch.arange(20)), dm.train_images(), rtol=0, atol=0)
    with pytest.raises(IndexError):
        dm.train_images([20])


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(10, 0.0, 0), (10, 0.25, 2), (10, 0.01, 1), (2, 0.9, 1), (1, 0.5, 0)])
def test_split_train_val_sizes_and_disjointness(n, fraction, n_val):
    """round(fraction · n) held out, at least 1 when fraction > 0, never all; a partition of 0..n-1."""
    train, val = split_train_val(n, fraction, seed=0)
    assert len(val) == n_val and torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.equal(split_train_val(n, fraction, seed=0)[1], val)
