"""Specification of OASISDataModule: axial slices of MRI volumes as (image, index) pairs, split by
subject, on tiny volumes in OASIS-1's real per-subject layout (Analyze .hdr/.img) and in a plain
folder of NIfTI files. No network is involved (OASIS has no download)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tests.helpers.image_files import (
    OASIS_SHAPE,
    brain_volume,
    oasis_t88_path,
    save_volume,
    truncate,
    write_nifti_folder,
    write_oasis,
)

import neurosql_pl.datamodules.oasis as oasis
from neurosql_pl.datamodules import CorruptFileError, DatasetNotFoundError, OASISDataModule
from neurosql_pl.datamodules.oasis import load_volume, normalise_volume, select_slices, subject_id

N_SUBJECTS = 6  # + 1 MR2 rescan of subject 1 → 7 volumes


def make(data_dir: Path, **kwargs) -> OASISDataModule:
    kwargs = {"batch_size": 8, "image_size": 16, "slices_per_volume": 3, "val_fraction": 0.0, **kwargs}
    dm = OASISDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def analyze_dir(tmp_path: Path) -> Path:
    return write_oasis(tmp_path, N_SUBJECTS, analyze=True, rescans=1)


def one_epoch(dm) -> tuple[torch.Tensor, torch.Tensor]:
    images, indices = zip(*dm.train_dataloader())
    return torch.cat(images), torch.cat(indices)


# ----------------------------------------------------------------------------- the (image, index) contract


@pytest.mark.parametrize(("subset", "mode"), [(None, "first"), (7, "first"), (7, "random")])
def test_one_epoch_yields_every_index_once_with_its_slice(analyze_dir, subset, mode):
    dm = make(analyze_dir, subset=subset, subset_mode=mode)
    assert dm.image_shape == (1, 16, 16)
    n = subset or (N_SUBJECTS + 1) * 3
    assert dm.num_samples == n
    images, indices = one_epoch(dm)
    assert images.dtype == torch.float32 and images.shape == (n, 1, 16, 16) and indices.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(indices.sort().values, torch.arange(n)) and not torch.equal(indices, torch.arange(n))
    torch.testing.assert_close(images, dm.train_images(indices), rtol=0, atol=0)
    idx = torch.tensor([n - 1, 0, 2])
    torch.testing.assert_close(dm.train_images(idx), dm.train_images()[idx], rtol=0, atol=0)


def test_subset_first_and_random_pick_from_the_training_slices(analyze_dir):
    full = make(analyze_dir)
    first = make(analyze_dir, subset=5)
    torch.testing.assert_close(first.train_images(), full.train_images()[:5], rtol=0, atol=0)
    rand = make(analyze_dir, subset=5, subset_mode="random", seed=4)
    idx = rand.train_indices
    assert torch.all(idx[1:] > idx[:-1])
    torch.testing.assert_close(rand.train_images(), full.train_images(idx), rtol=0, atol=0)
    assert torch.equal(rand.train_slice_index, full.train_slice_index[idx])


# ----------------------------------------------------------------------------- layout


def test_oasis_layout_uses_only_the_t88_masked_images(analyze_dir):
    """Of each session's files (RAW scan, SUBJ_111, unmasked t88_gfc, masked t88_masked_gfc)
    only the masked T88_111 image is a volume; MR1 and MR2 sessions both count."""
    dm = make(analyze_dir)
    names = [v.name for v in dm.volumes]
    assert len(names) == N_SUBJECTS + 1
    assert all(n.endswith("_mpr_n4_anon_111_t88_masked_gfc.hdr") for n in names)
    assert names[:2] == ["OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr", "OAS1_0001_MR2_mpr_n4_anon_111_t88_masked_gfc.hdr"]


def test_oasis_layout_as_nifti_reads_the_same_slices(tmp_path):
    """The same volumes stored as .nii.gz (with the affine nibabel assumes for Analyze) instead of
    Analyze give the same images, up to Analyze's int16 rounding."""
    analyze = make(write_oasis(tmp_path / "a", 3, analyze=True))
    nifti = make(write_oasis(tmp_path / "n", 3, analyze=False))
    assert [v.name.replace(".nii.gz", ".hdr") for v in nifti.volumes] == [v.name for v in analyze.volumes]
    torch.testing.assert_close(nifti.train_images(), analyze.train_images(), rtol=0, atol=1 / 127.5)


def test_nifti_folder_is_found_recursively(tmp_path):
    dm = make(write_nifti_folder(tmp_path, 4))
    assert [v.relative_to(dm.root).as_posix() for v in dm.volumes] == [f"sub-0{k}/anat/sub-0{k}_T1w.nii.gz" for k in range(1, 5)]
    assert dm.train_subjects == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert dm.num_samples == 12


def test_pattern_and_subdir_select_other_files(tmp_path):
    write_oasis(tmp_path, 2)
    dm = make(tmp_path, pattern="**/T88_111/*_t88_gfc.hdr")  # the unmasked images instead
    assert [v.name for v in dm.volumes] == [f"OAS1_000{k}_MR1_mpr_n4_anon_111_t88_gfc.hdr" for k in (1, 2)]
    write_nifti_folder(tmp_path / "elsewhere", 2, subdir="")
    assert len(make(tmp_path / "elsewhere", subdir="").volumes) == 2


def test_subject_ids():
    assert subject_id("disc1/OAS1_0061_MR2/PROCESSED/MPRAGE/T88_111/OAS1_0061_MR2_mpr_n4.hdr") == "OAS1_0061"
    assert subject_id("sub-07/anat/sub-07_T1w.nii.gz") == "sub-07"
    assert subject_id("scans/brain_3.nii.gz") == "scans/brain_3"


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_by_subject_never_by_slice(analyze_dir, seed):
    """No subject has slices in both splits; an MR2 rescan stays with its MR1; seeded."""
    dm = make(analyze_dir, val_fraction=0.34, seed=seed)
    assert len(dm.val_subjects) == 2 and len(dm.train_subjects) == N_SUBJECTS - 2
    assert set(dm.train_subjects).isdisjoint(dm.val_subjects)
    subject_of = [subject_id(v.relative_to(dm.root).as_posix()) for v in dm.volumes]
    train_subjects = {subject_of[v] for v in dm.train_volume_index.tolist()}
    assert train_subjects == set(dm.train_subjects)
    n_val_volumes = sum(s in dm.val_subjects for s in subject_of)
    assert len(dm.val_set) == 3 * n_val_volumes and len(dm.test_set) == len(dm.val_set)
    assert dm.num_samples + len(dm.val_set) == 3 * (N_SUBJECTS + 1)
    again = make(analyze_dir, val_fraction=0.34, seed=seed)
    assert again.val_subjects == dm.val_subjects


def test_different_seeds_hold_out_different_subjects(analyze_dir):
    held_out = {tuple(make(analyze_dir, val_fraction=0.34, seed=s).val_subjects) for s in range(4)}
    assert len(held_out) > 1


# ----------------------------------------------------------------------------- slices


def test_slices_per_volume_come_from_the_central_band(analyze_dir):
    depth = OASIS_SHAPE[2]
    dm = make(analyze_dir, slices_per_volume=4, slice_band=0.5, min_brain_fraction=0.0)
    counts = torch.bincount(dm.train_volume_index)
    assert counts.tolist() == [4] * (N_SUBJECTS + 1)
    first, width = (depth - depth // 2) // 2, depth // 2
    assert dm.train_slice_index.min() >= first and dm.train_slice_index.max() < first + width
    for v in range(N_SUBJECTS + 1):  # distinct, increasing, spread over the band
        slices = dm.train_slice_index[dm.train_volume_index == v]
        assert torch.all(slices[1:] > slices[:-1]) and slices[-1] - slices[0] >= width // 2


def test_fewer_eligible_slices_than_asked_gives_all_of_them(analyze_dir):
    dm = make(analyze_dir, slices_per_volume=100, slice_band=0.3, min_brain_fraction=0.0)
    assert dm.num_samples == (N_SUBJECTS + 1) * round(0.3 * OASIS_SHAPE[2])


def test_min_brain_fraction_drops_slices_with_little_brain():
    """In an ellipsoid brain the share of brain pixels falls off towards the poles."""
    norm = normalise_volume(brain_volume((20, 24, 40)), (1.0, 99.0), Path("v"))
    all_band = select_slices(norm, 1.0, 100, 0.0)
    strict = select_slices(norm, 1.0, 100, 0.3)
    assert len(all_band) == 40 and 0 < len(strict) < 40
    brain = (norm[:, :, strict] > oasis.BRAIN_LEVEL).mean(axis=(0, 1))
    assert brain.min() >= 0.3
    assert abs(strict.mean() - 19.5) < 1.0  # symmetric about the middle


def test_no_slice_passing_the_selection_is_an_error(analyze_dir):
    with pytest.raises(ValueError, match="min_brain_fraction"):
        make(analyze_dir, min_brain_fraction=1.0)


def test_normalisation_is_per_volume(tmp_path):
    """Volumes that differ only by an intensity scale and offset give identical images, and
    every volume's images span [-1, 1] (background at -1)."""
    volume = brain_volume(seed=3)
    for k, (scale, offset) in enumerate(((1.0, 0.0), (7.5, 0.0), (0.02, 300.0))):
        save_volume(tmp_path / "oasis" / f"scan_{k}.nii.gz", volume * scale + offset)
    dm = make(tmp_path, slices_per_volume=2)
    per_volume = dm.train_images().reshape(3, 2, 1, 16, 16)
    torch.testing.assert_close(per_volume[1], per_volume[0], rtol=0, atol=1 / 127.5)
    torch.testing.assert_close(per_volume[2], per_volume[0], rtol=0, atol=1 / 127.5)
    assert per_volume.min() == -1 and per_volume.max() > 0.9  # resizing blurs the brightest voxels


def test_orientation_is_canonical_whatever_the_stored_axis_order(tmp_path):
    """A volume stored with permuted and flipped axes (and the affine that says so) reads back
    as the same RAS array, so its slices are the same."""
    volume = brain_volume(seed=5)
    x, y, z = volume.shape
    stored = volume.transpose(2, 0, 1)[::-1]  # stored voxel (a, b, c) = volume[b, c, z - 1 - a]
    affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, z - 1], [0, 0, 0, 1]], dtype=float)
    a = save_volume(tmp_path / "ras.nii.gz", volume)
    b = save_volume(tmp_path / "permuted.nii.gz", np.ascontiguousarray(stored), affine)
    assert nib.load(b).shape == (z, x, y)
    np.testing.assert_array_equal(load_volume(b), load_volume(a))


def test_slices_are_shown_anterior_up(tmp_path):
    """A bright block at the anterior (high y) end lands in the top rows of the image."""
    volume = np.zeros(OASIS_SHAPE, np.float32)
    volume[4:16, 4:20, :] = 400.0
    volume[8:12, 18:22, :] = 1000.0  # anterior
    save_volume(tmp_path / "oasis" / "v.nii.gz", volume)
    image = make(tmp_path, slices_per_volume=1, image_size=24).train_images()[0, 0]
    rows = torch.nonzero(image > 0.9)[:, 0]
    assert rows.numel() and rows.max() < 6


# ----------------------------------------------------------------------------- cache


def test_slices_are_cached_and_the_cache_is_keyed_by_settings_and_files(analyze_dir, monkeypatch):
    first = make(analyze_dir)
    cache = analyze_dir / "oasis" / ".neurosql_cache"
    assert len(list(cache.glob("slices-*.pt"))) == 1

    def no_reading(path):
        raise AssertionError("read a volume although the cache holds its slices")

    monkeypatch.setattr(oasis, "load_volume", no_reading)
    again = make(analyze_dir, val_fraction=0.34)  # the split is not part of the key
    assert again.num_samples + len(again.val_set) == first.num_samples
    monkeypatch.undo()
    make(analyze_dir, image_size=8)
    assert len(list(cache.glob("slices-*.pt"))) == 2
    save_volume(oasis_t88_path(analyze_dir, 2), brain_volume(seed=77, scale=3.0))  # a file changes
    changed = make(analyze_dir)
    assert len(list(cache.glob("slices-*.pt"))) == 3
    assert not torch.equal(changed.train_images(), first.train_images())


# ----------------------------------------------------------------------------- bad inputs


def test_missing_data_raises_with_the_layout(tmp_path):
    dm = OASISDataModule(data_dir=str(tmp_path))
    for step in (dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(DatasetNotFoundError) as info:
            step()
        message = str(info.value)
        for needle in (str(tmp_path / "oasis"), "PROCESSED/MPRAGE/T88_111", "_t88_masked_gfc.hdr", ".img", "sites.wustl.edu", ".nii.gz"):
            assert needle in message, needle


def test_folder_without_volumes_raises(tmp_path):
    (tmp_path / "oasis" / "disc1").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no volumes matching"):
        OASISDataModule(data_dir=str(tmp_path)).prepare_data()


def test_truncated_img_names_the_file(analyze_dir):
    img = truncate(oasis_t88_path(analyze_dir, 3).with_suffix(".img"))
    with pytest.raises(CorruptFileError, match="truncated or corrupt") as info:
        make(analyze_dir)
    assert str(img) in str(info.value) and "bytes" in str(info.value)


def test_missing_img_names_the_file(analyze_dir):
    hdr = oasis_t88_path(analyze_dir, 2)
    hdr.with_suffix(".img").unlink()
    with pytest.raises(CorruptFileError, match=r"\.img is missing") as info:
        make(analyze_dir)
    assert str(hdr) in str(info.value)


def test_corrupt_nifti_names_the_file(tmp_path):
    write_nifti_folder(tmp_path, 3)
    bad = tmp_path / "oasis" / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    truncate(bad, 0.6)
    with pytest.raises(CorruptFileError) as info:
        make(tmp_path)
    assert str(bad) in str(info.value)
    bad.write_bytes(b"not a volume at all")
    with pytest.raises(CorruptFileError, match="cannot be read by nibabel") as info:
        make(tmp_path)
    assert str(bad) in str(info.value)


def test_constant_volume_is_rejected_by_name(tmp_path):
    write_nifti_folder(tmp_path, 2)
    flat = save_volume(tmp_path / "oasis" / "flat.nii.gz", np.full(OASIS_SHAPE, 5.0, np.float32))
    with pytest.raises(CorruptFileError, match="constant") as info:
        make(tmp_path)
    assert str(flat) in str(info.value)


def test_invalid_arguments_are_rejected():
    for kwargs, match in (
        ({"layout": "bids"}, "layout"),
        ({"slice_band": 0.0}, "slice_band"),
        ({"slices_per_volume": 0}, "slices_per_volume"),
        ({"min_brain_fraction": 1.5}, "min_brain_fraction"),
        ({"intensity_percentiles": (99.0, 1.0)}, "intensity_percentiles"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"image_size": 0}, "image_size"),
    ):
        with pytest.raises(ValueError, match=match):
            OASISDataModule(**kwargs)


def test_prepare_data_assigns_no_state_and_hparams_are_saved(analyze_dir):
    dm = OASISDataModule(data_dir=str(analyze_dir), slices_per_volume=5, seed=2)
    before = dict(vars(dm))
    dm.prepare_data()
    assert vars(dm).keys() == before.keys() and all(vars(dm)[k] is v for k, v in before.items())
    assert not hasattr(dm, "num_samples")
    assert dm.hparams.slices_per_volume == 5 and dm.hparams.seed == 2 and dm.hparams.layout == "auto"
