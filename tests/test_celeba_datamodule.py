"""CelebADataModule on tiny files in the real layout (img_align_celeba/ + list_eval_partition):
the official partition, both partition list formats, errors that say what to place where, and
the torchvision download moved into place. The real download fails here (torchvision needs
gdown, and sockets are blocked: tests/conftest.py); its test puts back a local fake."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import neurosql_pl.datamodules.celeba as celeba
from neurosql_pl.datamodules import CelebADataModule, CorruptFileError, DatasetNotFoundError
from neurosql_pl.datamodules.images import ImageSpec
from tests.helpers.image_datamodules import N_CELEBA, N_TRAIN, make
from tests.helpers.image_files import write_celeba


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
    data = tmp_path / "data"
    dm = CelebADataModule(data_dir=str(data), image_size=8, download=True)
    dm.prepare_data()
    assert sorted(p.name for p in data.iterdir()) == ["celeba"]
    assert sorted(p.name for p in (data / "celeba").iterdir()) == ["img_align_celeba", "list_eval_partition.txt"]
    dm.setup("fit")
    assert dm.num_samples == N_TRAIN["celeba"]
