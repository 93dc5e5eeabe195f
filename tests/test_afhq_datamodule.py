"""AFHQDataModule on tiny files in the real layout (afhq/{train,val}/{cat,dog,wild}/): class
filter and labels, errors that say what to place where, and the zip download (extraction,
unsafe archives, streaming to disk). Sockets are blocked (tests/conftest.py), so the real
download fails; the tests of the download path put back a local fake."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
import torch

import neurosql_pl.datamodules.afhq as afhq
import neurosql_pl.datamodules.download as download
from neurosql_pl.datamodules import AFHQDataModule, CorruptFileError, DatasetNotFoundError
from tests.helpers.image_datamodules import N_PER_CLASS, N_VAL_PER_CLASS, make
from tests.helpers.image_files import picture, save_image, write_afhq


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
