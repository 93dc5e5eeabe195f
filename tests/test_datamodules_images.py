"""Specification of the image-file datamodules (CelebA, AFHQ, image folder), their shared
machinery and `python -m neurosql_pl.datamodules.prepare`, on tiny files in the real on-disk layouts.

The network is never used: sockets and every download function raise (autouse `no_network`);
the tests of a download path put back a local fake explicitly.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers.network import block_network, offline
from tests.helpers.idx_files import write_mnist_idx
from tests.helpers.image_files import (
    celeba_partition,
    picture,
    save_image,
    truncate,
    write_afhq,
    write_celeba,
    write_image_folder,
)

import neurosql_pl.datamodules.afhq as afhq
import neurosql_pl.datamodules.download as download
import neurosql_pl.datamodules.celeba as celeba
from neurosql_pl.datamodules import (
    AFHQDataModule,
    CelebADataModule,
    ChannelMismatchError,
    CorruptFileError,
    DatasetNotFoundError,
    ImageFolderDataModule,
    MNISTDataModule,
)
from neurosql_pl.datamodules.images import ImageSpec, list_image_files
from neurosql_pl.datamodules.splits import split_train_val
from neurosql_pl.datamodules.prepare import CONFIG_DIR, available_configs
from neurosql_pl.datamodules.prepare import main as prepare_main
from neurosql_pl.run_folder import data_config_section, instantiate

N_CELEBA = 30  # 18 train, 6 valid, 6 test (celeba_partition)
N_PER_CLASS, N_VAL_PER_CLASS = 4, 2
N_FOLDER = 12


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails at once."""
    block_network(monkeypatch)
    monkeypatch.setattr(afhq, "fetch_url_to_file", offline)

    def torchvision_offline(root):
        raise RuntimeError("To download files from GDrive, 'gdown' is required (network disabled in tests)")

    monkeypatch.setattr(celeba, "_download_with_torchvision", torchvision_offline)


REAL_CELEBA_TORCHVISION = celeba._download_with_torchvision


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


# ----------------------------------------------------------------------------- CelebA


def _partition_names(root: Path) -> dict[int, list[str]]:
    lines = (root / "celeba" / "list_eval_partition.txt").read_text().split("\n")
    names: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for line in filter(None, lines):
        name, split = line.split()
        names[int(split)].append(name)
    return names


def test_celeba_follows_the_official_partition(tmp_path):
    """train = partition 0 in file order, val loader = partition 1, test loader = partition 2."""
    dm = make("celeba", tmp_path)
    names = _partition_names(tmp_path)
    assert [p.name for p in dm.train_files] == names[0]
    spec = ImageSpec(3, 16, 178)
    for loader, split in ((dm.val_dataloader(), 1), (dm.test_dataloader(), 2)):
        images, indices = (torch.cat(t) for t in zip(*loader))
        assert torch.equal(indices, torch.arange(len(names[split])))
        files = [tmp_path / "celeba" / "img_align_celeba" / n for n in names[split]]
        expected = torch.from_numpy(spec.decode_all(files)).float() / 127.5 - 1
        torch.testing.assert_close(images, expected, rtol=0, atol=0)


def test_celeba_reads_the_kaggle_csv_partition_list(tmp_path):
    write_celeba(tmp_path, N_CELEBA)
    names = _partition_names(tmp_path)
    txt = tmp_path / "celeba" / "list_eval_partition.txt"
    rows = [line.replace(" ", ",") for line in txt.read_text().splitlines()]
    (tmp_path / "celeba" / "list_eval_partition.csv").write_text("image_id,partition\n" + "\n".join(rows) + "\n")
    txt.unlink()
    dm = CelebADataModule(data_dir=str(tmp_path), image_size=8, download=False)
    dm.setup("fit")
    assert [p.name for p in dm.train_files] == names[0]


def test_celeba_malformed_partition_line_names_file_and_line(tmp_path):
    write_celeba(tmp_path, N_CELEBA)
    txt = tmp_path / "celeba" / "list_eval_partition.txt"
    lines = txt.read_text().splitlines()
    lines[6] = "000007.jpg 7"
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptFileError, match="line 7") as info:
        CelebADataModule(data_dir=str(tmp_path), download=False).setup("fit")
    assert str(txt) in str(info.value)


def _assert_celeba_layout(message: str, root: Path) -> None:
    for needle in (str(root / "celeba"), "img_align_celeba/", "img_align_celeba.zip", "list_eval_partition.txt", celeba.CELEBA_URL):
        assert needle in message, needle


def test_celeba_missing_with_download_failing_explains_layout_and_why(tmp_path):
    dm = CelebADataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    _assert_celeba_layout(message, tmp_path)
    assert "torchvision" in message and "gdown" in message  # the failed attempt and its reason
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_celeba_missing_without_download_raises_at_prepare_and_setup(tmp_path):
    dm = CelebADataModule(data_dir=str(tmp_path), download=False)
    for step in (dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(DatasetNotFoundError) as info:
            step()
        _assert_celeba_layout(str(info.value), tmp_path)
        assert "download=True" in str(info.value)


def test_celeba_listed_image_missing_is_named(tmp_path):
    write_celeba(tmp_path, N_CELEBA)
    gone = tmp_path / "celeba" / "img_align_celeba" / "000002.jpg"
    gone.unlink()
    with pytest.raises(DatasetNotFoundError, match="1 of the 18") as info:
        CelebADataModule(data_dir=str(tmp_path), download=False).setup("fit")
    assert str(gone) in str(info.value)


def test_celeba_torchvision_download_is_moved_into_place(tmp_path, monkeypatch):
    """torchvision downloads into a temporary root beside the data; its images and lists end
    up in <data_dir>/celeba, the zip and the temporary root do not."""
    import torchvision

    source = write_celeba(tmp_path / "source", N_CELEBA) / "celeba"

    class FakeCelebA:
        def __init__(self, root, split, target_type, download):
            assert download and split == "all"
            fetched = Path(root) / "celeba"
            fetched.mkdir(parents=True)
            (fetched / "img_align_celeba.zip").write_bytes(b"zip")
            (fetched / "list_eval_partition.txt").write_bytes((source / "list_eval_partition.txt").read_bytes())
            (fetched / "img_align_celeba").mkdir()
            for f in (source / "img_align_celeba").iterdir():
                (fetched / "img_align_celeba" / f.name).write_bytes(f.read_bytes())

    monkeypatch.setattr(torchvision.datasets, "CelebA", FakeCelebA)
    monkeypatch.setattr(celeba, "_download_with_torchvision", REAL_CELEBA_TORCHVISION)
    data = tmp_path / "data"
    dm = CelebADataModule(data_dir=str(data), image_size=8, download=True)
    dm.prepare_data()
    assert sorted(p.name for p in data.iterdir()) == ["celeba"]
    assert sorted(p.name for p in (data / "celeba").iterdir()) == ["img_align_celeba", "list_eval_partition.txt"]
    dm.setup("fit")
    assert dm.num_samples == N_TRAIN["celeba"]


# ----------------------------------------------------------------------------- AFHQ


def test_afhq_class_filter_and_labels(tmp_path):
    write_afhq(tmp_path, N_PER_CLASS, N_VAL_PER_CLASS)
    everything = AFHQDataModule(data_dir=str(tmp_path), image_size=8, download=False)
    everything.setup("fit")
    assert torch.equal(everything.train_labels(), torch.arange(3).repeat_interleave(N_PER_CLASS))
    cats = AFHQDataModule(data_dir=str(tmp_path), image_size=8, classes=["cat"], download=False)
    cats.setup("fit")
    assert cats.num_samples == N_PER_CLASS and len(cats.val_set) == N_VAL_PER_CLASS
    assert all(p.parent.name == "cat" and p.parent.parent.name == "train" for p in cats.train_files)
    assert torch.equal(cats.train_labels(), torch.zeros(N_PER_CLASS, dtype=torch.int64))
    wild_cat = AFHQDataModule(data_dir=str(tmp_path), image_size=8, classes=["wild", "cat"], download=False)
    wild_cat.setup("fit")
    assert torch.equal(wild_cat.train_labels(), torch.tensor([0] * N_PER_CLASS + [2] * N_PER_CLASS))
    torch.testing.assert_close(wild_cat.train_images(torch.arange(N_PER_CLASS)), cats.train_images(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="subset of"):
        AFHQDataModule(classes=["horse"])


def test_afhq_val_split_serves_val_and_test(tmp_path):
    dm = make("afhq", tmp_path)
    assert len(dm.val_set) == len(dm.test_set) == 3 * N_VAL_PER_CLASS
    assert all(p.relative_to(dm.root).parts[0] == "train" for p in dm.train_files)


def test_afhq_accepts_png(tmp_path):
    write_afhq(tmp_path, 2, 1)
    save_image(tmp_path / "afhq" / "train" / "dog" / "pixabay_dog_000009.png", picture(50, 64, 64))
    dm = AFHQDataModule(data_dir=str(tmp_path), image_size=8, download=False)
    dm.setup("fit")
    assert dm.num_samples == 7 and any(p.suffix == ".png" for p in dm.train_files)


def _assert_afhq_layout(message: str, root: Path) -> None:
    for needle in (str(root / "afhq" / "train" / "cat"), str(root / "afhq" / "val" / "wild"), afhq.AFHQ_URL):
        assert needle in message, needle


def test_afhq_missing_with_download_failing_explains_layout_and_why(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        AFHQDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    _assert_afhq_layout(str(info.value), tmp_path)
    assert "network access is disabled" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_afhq_missing_without_download_raises_with_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        AFHQDataModule(data_dir=str(tmp_path), download=False).setup("fit")
    _assert_afhq_layout(str(info.value), tmp_path)


def test_afhq_incomplete_folder_is_never_overwritten(tmp_path, monkeypatch):
    write_afhq(tmp_path, 1, 1, classes=("cat",))
    fetched = []
    monkeypatch.setattr(afhq, "fetch_url_to_file", lambda *a, **k: fetched.append(a))
    with pytest.raises(DatasetNotFoundError, match="incomplete"):
        AFHQDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert fetched == []
    AFHQDataModule(data_dir=str(tmp_path), classes=["cat"], download=True).prepare_data()  # cats are there


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _afhq_zip(tmp_path: Path, extra: dict[str, bytes]) -> bytes:
    source = write_afhq(tmp_path / "zip-source", 2, 1) / "afhq"
    members = {f"afhq/{p.relative_to(source).as_posix()}": p.read_bytes() for p in sorted(source.rglob("*.jpg"))}
    return _zip_bytes({**members, **extra})


def test_afhq_download_extracts_the_official_zip_layout(tmp_path, monkeypatch):
    archive = _afhq_zip(tmp_path, {"__MACOSX/afhq/._x": b"resource fork"})
    monkeypatch.setattr(afhq, "fetch_url_to_file", lambda url, dest, timeout: Path(dest).write_bytes(archive))
    data = tmp_path / "data"
    dm = AFHQDataModule(data_dir=str(data), image_size=8, download=True)
    dm.prepare_data()
    assert sorted(p.name for p in data.iterdir()) == ["afhq"]  # no zip, no temporary folder, no __MACOSX
    assert sorted(p.name for p in (data / "afhq").iterdir()) == ["train", "val"]
    dm.setup("fit")
    assert dm.num_samples == 6


@pytest.mark.parametrize("evil", ["../evil.jpg", "/abs/evil.jpg", "afhq/../../evil.jpg"])
def test_afhq_download_with_an_unsafe_member_writes_nothing(tmp_path, monkeypatch, evil):
    archive = _afhq_zip(tmp_path, {evil: b"x"})
    monkeypatch.setattr(afhq, "fetch_url_to_file", lambda url, dest, timeout: Path(dest).write_bytes(archive))
    data = tmp_path / "data"
    with pytest.raises(CorruptFileError, match="unsafe"):
        AFHQDataModule(data_dir=str(data), download=True).prepare_data()
    assert list(data.iterdir()) == [] and not (tmp_path / "evil.jpg").exists()


def test_afhq_download_with_a_symlink_member_writes_nothing(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("afhq/train/cat/a.jpg", b"x")
        link = zipfile.ZipInfo("afhq/train/cat/b.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    monkeypatch.setattr(afhq, "fetch_url_to_file", lambda url, dest, timeout: Path(dest).write_bytes(buffer.getvalue()))
    with pytest.raises(CorruptFileError, match="symbolic link"):
        AFHQDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_afhq_download_that_is_not_a_zip_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(afhq, "fetch_url_to_file", lambda url, dest, timeout: Path(dest).write_bytes(b"<html>quota</html>"))
    with pytest.raises(CorruptFileError, match="BadZipFile"):
        AFHQDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert list(tmp_path.iterdir()) == []


class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, length: int) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(length)}


@pytest.mark.parametrize("declared", [0, 7], ids=["complete", "cut-short"])
def test_fetch_url_to_file_streams_to_disk_atomically(tmp_path, monkeypatch, declared):
    """The body lands under its final name only when it is complete (Content-Length checked)."""
    body = b"x" * (3 * 2**20 + 5)  # more than one chunk
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda request, timeout: _FakeResponse(body, len(body) + declared))
    dest = tmp_path / "afhq.zip"
    if declared:
        with pytest.raises(download.FETCH_ERRORS):
            download.fetch_url_to_file("https://example.invalid/afhq.zip", dest)
        assert list(tmp_path.iterdir()) == []
    else:
        assert download.fetch_url_to_file("https://example.invalid/afhq.zip", dest) == dest
        assert dest.read_bytes() == body and [p.name for p in tmp_path.iterdir()] == ["afhq.zip"]


# ----------------------------------------------------------------------------- image folder


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


# ----------------------------------------------------------------------------- configs and prepare


def test_every_data_config_builds_its_datamodule(tmp_path):
    assert {"mnist", "celeba", "afhq", "oasis", "folder"} <= set(available_configs())
    for name in available_configs():
        dm = instantiate(data_config_section(CONFIG_DIR / f"{name}.yaml"), {"data_dir": str(tmp_path)})
        assert type(dm).__name__.endswith("DataModule") and dm.hparams.data_dir == str(tmp_path)
        assert len(dm.image_shape) == 3


def test_prepare_cli_unknown_name_lists_the_configs(capsys):
    with pytest.raises(SystemExit) as info:
        prepare_main(["imagenet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown data config 'imagenet'" in err and "celeba" in err and "folder" in err


def test_prepare_cli_ready_and_missing_data(tmp_path, capsys):
    folder = write_image_folder(tmp_path, 3)
    assert prepare_main(["folder", "--data.data_dir", str(folder), "--data.image_size=8"]) == 0
    assert "data ready" in capsys.readouterr().out
    assert prepare_main(["celeba", "--data.data_dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "DatasetNotFoundError" in err and "list_eval_partition.txt" in err
    assert prepare_main(["--config", str(CONFIG_DIR / "afhq.yaml"), "--data.data_dir", str(tmp_path / "x"), "--data.download", "false"]) == 1
    assert "afhq" in capsys.readouterr().err
