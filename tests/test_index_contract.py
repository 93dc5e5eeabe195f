"""The (image, index) contract through every path, for every datamodule.

NeuroSQL trains latent i against the image that the loader pairs with index i, and its
assignment step reads training image i with `train_images([i])` (`images.trainer_images`). Both
must be the image at position i of the training set after the split and the subset, or image i
silently trains against another image's code. Here every image carries its source id in its
pixels (tests/helpers/id_images.py), so which image belongs at each position is known
independently of the datamodule. Each case (a datamodule with options: split, subset,
preloaded or decoded on demand, read from the disk cache) is checked through `dataset[i]`, the
batched `dataset.__getitems__` and a whole epoch of the real `train_dataloader()` in two worker
processes; the held-out loaders through their own indices. With `hflip` the training set is the
images and then the same images mirrored: the pixels also tell whether an image is mirrored,
and every check compares (id, mirrored) pairs; the held-out sets are never mirrored.

A new datamodule: write a builder (its files in their real layout with ids in the pixels; the
ids it must serve) and add it to BUILDERS and CASES; `test_every_datamodule_has_a_case` fails
until it is there.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

import neurosql_pl.datamodules as datamodules
import neurosql_pl.datamodules.indexed as indexed_module
import neurosql_pl.datamodules.oasis as oasis_module
from neurosql_pl.datamodules import (
    AFHQDataModule,
    CelebADataModule,
    Emoji3DDataModule,
    ImageFilesDataModule,
    ImageFolderDataModule,
    IndexedDataModule,
    IndexedDataset,
    MNISTDataModule,
    OASISDataModule,
)
from neurosql_pl.datamodules.images import ImageSpec
from neurosql_pl.datamodules.splits import select_subset, split_train_val
from neurosql_pl.images import trainer_images
from tests.helpers.id_images import (
    count_mirrored,
    decode_colour_ids,
    decode_count_ids,
    decode_gray_ids,
    id_picture,
    marker_mirrored,
    pick,
    write_mnist_ids,
    write_oasis_ids,
)
from tests.helpers.image_files import (
    AFHQ_CLASSES,
    celeba_partition,
    image_folder_paths,
    write_afhq,
    write_celeba,
    write_image_folder,
)

BATCH = 4  # most cases have no multiple of 4 training images: their last batch is a partial one
SIZE = 16


@dataclass(frozen=True)
class Served:
    """A set-up datamodule and what it must serve at each position: (source id, mirrored)."""

    dm: IndexedDataModule
    train: list[tuple[int, bool]]  # (id, mirrored) of the training item at index i
    held_out_ids: dict[str, list[int]]  # {"val": [...], "test": [...]}, by index; never mirrored
    decode: Callable[[Tensor], Tensor]  # images (B, C, H, W) → their ids (B,)
    mirrored: Callable[[Tensor], Tensor]  # images (B, C, H, W) → whether each is mirrored (B,)

    def seen(self, images: Tensor) -> list[tuple[int, bool]]:
        """(id, mirrored) of each image (B, C, H, W), read from its pixels."""
        return list(zip(self.decode(images).tolist(), self.mirrored(images).tolist()))


Build = Callable[..., Served]  # (tmp folder, num_workers) → Served


def set_up(dm: IndexedDataModule) -> IndexedDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


@contextmanager
def nothing_decoded() -> Iterator[None]:
    """Inside, decoding an image file or reading a volume fails: what is set up inside must come
    from the disk cache."""
    error = AssertionError("decoded data that the disk cache holds")
    with mock.patch.object(ImageSpec, "decode", side_effect=error), mock.patch.object(
        oasis_module, "load_volume", side_effect=error
    ):
        yield


def build_twice(make: Callable[[], IndexedDataModule], from_cache: bool) -> IndexedDataModule:
    """make(), set up; with `from_cache` a second one, set up from the cache the first wrote."""
    dm = set_up(make())
    if not from_cache:
        return dm
    with nothing_decoded():
        return set_up(make())


def after_subset(ids: list[int], subset: int | None, subset_mode: str, seed: int) -> list[int]:
    return pick(ids, select_subset(len(ids), subset, subset_mode, seed))


def training_items(ids: list[int], hflip: bool = False) -> list[tuple[int, bool]]:
    """(id, mirrored) of each training index: the images in order, then with hflip the same
    images mirrored (index v ≥ N shows image v − N flipped)."""
    return [(k, False) for k in ids] + ([(k, True) for k in ids] if hflip else [])


# ----------------------------------------------------------------------------- one builder per datamodule


def mnist(root: Path, num_workers: int, subset: int | None = None, subset_mode: str = "first", seed: int = 0) -> Served:
    """Training images show ids 0 … 40 in file order, test images 41 … 50."""
    n_train, n_test = 41, 10
    write_mnist_ids(root, n_train, n_test)
    dm = set_up(
        MNISTDataModule(
            str(root), batch_size=BATCH, num_workers=num_workers, subset=subset, subset_mode=subset_mode,
            seed=seed, download=False,
        )
    )
    test = list(range(n_train, n_train + n_test))
    train = training_items(after_subset(list(range(n_train)), subset, subset_mode, seed))
    return Served(dm, train, {"val": test, "test": test}, decode_gray_ids, marker_mirrored)


def celeba(
    root: Path, num_workers: int, subset: int | None = None, subset_mode: str = "first", seed: int = 0,
    from_cache: bool = False, hflip: bool = False, **options: object,
) -> Served:
    """File k + 1 shows id k; the official partition list puts it in train, valid or test."""
    n = 30
    partition = celeba_partition(n)
    write_celeba(root, n, partition, draw=id_picture)
    make = partial(
        CelebADataModule, str(root), image_size=SIZE, batch_size=BATCH, num_workers=num_workers, subset=subset,
        subset_mode=subset_mode, seed=seed, download=False, hflip=hflip, **options,
    )
    split = {code: [k for k in range(n) if partition[k] == code] for code in (0, 1, 2)}
    return Served(
        build_twice(make, from_cache), training_items(after_subset(split[0], subset, subset_mode, seed), hflip),
        {"val": split[1], "test": split[2]}, decode_colour_ids, marker_mirrored,
    )


def afhq(
    root: Path, num_workers: int, classes: list[str] | None = None, subset: int | None = None,
    subset_mode: str = "first", seed: int = 0, hflip: bool = False, **options: object,
) -> Served:
    """Ids 0 … 14 are the training images (cat, dog, wild; 5 each), 15 … 20 the val images."""
    per_class, val_per_class = 5, 2
    write_afhq(root, per_class, val_per_class, size=24, draw=id_picture)
    chosen = [c for c in AFHQ_CLASSES if classes is None or c in classes]  # always in this order
    train = [AFHQ_CLASSES.index(c) * per_class + j for c in chosen for j in range(per_class)]
    val = [3 * per_class + AFHQ_CLASSES.index(c) * val_per_class + j for c in chosen for j in range(val_per_class)]
    dm = set_up(
        AFHQDataModule(
            str(root), image_size=SIZE, classes=classes, batch_size=BATCH, num_workers=num_workers, subset=subset,
            subset_mode=subset_mode, seed=seed, download=False, hflip=hflip, **options,
        )
    )
    items = training_items(after_subset(train, subset, subset_mode, seed), hflip)
    return Served(dm, items, {"val": val, "test": val}, decode_colour_ids, marker_mirrored)


def folder(
    root: Path, num_workers: int, val_fraction: float = 0.0, subset: int | None = None, subset_mode: str = "first",
    seed: int = 0, from_cache: bool = False, hflip: bool = False,
    datamodule: type[ImageFolderDataModule] = ImageFolderDataModule, **options: object,
) -> Served:
    """Image k shows id k; the files sorted by relative path are split with val_fraction."""
    n = 13
    data_dir = write_image_folder(root, n, draw=id_picture)
    if datamodule is Emoji3DDataModule:
        (data_dir / "SOURCE.txt").write_text("set up\n")  # a finished set-up: prepare_data fetches nothing
    paths = image_folder_paths(n)
    in_path_order = sorted(range(n), key=paths.__getitem__)
    train_pos, val_pos = split_train_val(n, val_fraction, seed)
    make = partial(
        datamodule, str(data_dir), image_size=SIZE, val_fraction=val_fraction, batch_size=BATCH,
        num_workers=num_workers, subset=subset, subset_mode=subset_mode, seed=seed, hflip=hflip, **options,
    )
    held_out = pick(in_path_order, val_pos)
    train = after_subset(pick(in_path_order, train_pos), subset, subset_mode, seed)
    return Served(
        build_twice(make, from_cache), training_items(train, hflip), {"val": held_out, "test": held_out},
        decode_colour_ids, marker_mirrored,
    )


def emoji3d(root: Path, num_workers: int, **options: object) -> Served:
    """The folder case through Emoji3DDataModule, on a folder whose set-up is finished."""
    return folder(root, num_workers, datamodule=Emoji3DDataModule, **options)


def oasis(
    root: Path, num_workers: int, val_fraction: float = 0.0, subset: int | None = None, subset_mode: str = "first",
    seed: int = 0, from_cache: bool = False, hflip: bool = False,
) -> Served:
    """6 volumes (subjects 1 … 5, subject 1 scanned twice) of 6 slices, ids 0 … 35 in path
    order, inferior → superior; every slice kept; subjects split with val_fraction."""
    volumes = write_oasis_ids(root, n_subjects=5, rescans=1, side=SIZE, depth=6)
    subjects = sorted({subject for subject, _ in volumes})
    _, val_pos = split_train_val(len(subjects), val_fraction, seed)
    held_out_subjects = set(pick(subjects, val_pos))
    train = [k for subject, ids in volumes if subject not in held_out_subjects for k in ids]
    held_out = [k for subject, ids in volumes if subject in held_out_subjects for k in ids]
    make = partial(
        OASISDataModule, str(root), image_size=SIZE, slice_band=1.0, slices_per_volume=6, min_brain_fraction=0.0,
        val_fraction=val_fraction, batch_size=BATCH, num_workers=num_workers, subset=subset,
        subset_mode=subset_mode, seed=seed, hflip=hflip,
    )
    return Served(
        build_twice(make, from_cache), training_items(after_subset(train, subset, subset_mode, seed), hflip),
        {"val": held_out, "test": held_out}, decode_count_ids, count_mirrored,
    )


BASES = (IndexedDataModule, ImageFilesDataModule)  # what datamodules derive from, not datamodules
BUILDERS: dict[type[IndexedDataModule], Build] = {
    MNISTDataModule: mnist,
    CelebADataModule: celeba,
    AFHQDataModule: afhq,
    ImageFolderDataModule: folder,
    Emoji3DDataModule: emoji3d,
    OASISDataModule: oasis,
}

CASES: dict[str, Build] = {
    "mnist": mnist,
    "mnist-first-subset": partial(mnist, subset=17),
    "mnist-random-subset": partial(mnist, subset=13, subset_mode="random", seed=3),
    "celeba-random-subset-preloaded": partial(celeba, subset=11, subset_mode="random", seed=5),
    "celeba-decoded-on-demand": partial(celeba, memory_budget_mb=0),
    "celeba-random-subset-from-disk-cache": partial(celeba, subset=9, subset_mode="random", seed=2, from_cache=True),
    "afhq-two-classes-random-subset": partial(afhq, classes=["wild", "dog"], subset=7, subset_mode="random", seed=1),
    "afhq-decoded-on-demand": partial(afhq, memory_budget_mb=0),
    "folder-held-out-random-subset-on-demand": partial(
        folder, val_fraction=0.25, subset=7, subset_mode="random", seed=4, memory_budget_mb=0
    ),
    "folder-held-out-from-disk-cache": partial(folder, val_fraction=0.3, seed=6, from_cache=True),
    "emoji3d-held-out-random-subset": partial(emoji3d, val_fraction=0.25, subset=9, subset_mode="random", seed=2),
    "oasis-subject-split-random-subset": partial(oasis, val_fraction=0.34, subset=17, subset_mode="random", seed=1),
    "oasis-subject-split-from-disk-cache": partial(oasis, val_fraction=0.2, seed=2, from_cache=True),
    "celeba-hflip-random-subset-preloaded": partial(celeba, subset=11, subset_mode="random", seed=5, hflip=True),
    "celeba-hflip-decoded-on-demand": partial(celeba, memory_budget_mb=0, hflip=True),
    "afhq-hflip-one-class": partial(afhq, classes=["dog"], hflip=True),
    "folder-hflip-held-out-from-disk-cache": partial(folder, val_fraction=0.3, seed=6, from_cache=True, hflip=True),
    "emoji3d-hflip-held-out-on-demand": partial(emoji3d, val_fraction=0.25, memory_budget_mb=0, hflip=True),
    "oasis-hflip-subject-split-random-subset": partial(
        oasis, val_fraction=0.34, subset=17, subset_mode="random", seed=1, hflip=True
    ),
}


# ----------------------------------------------------------------------------- the checks, one per path


def one_epoch(loader: DataLoader) -> tuple[Tensor, Tensor]:
    """(images (M, C, H, W), indices (M,)): a whole pass of `loader`, in its order."""
    images, indices = zip(*loader)
    return torch.cat(images), torch.cat(indices)


def images_at(served: Served) -> Callable[[Tensor], Tensor]:
    """How the assignment step reads training images by index."""
    return trainer_images(SimpleNamespace(datamodule=served.dm))  # type: ignore[arg-type]


def check_items(served: Served) -> None:
    """dataset[i] is (image at position i, i), the same image as train_images([i])."""
    dataset = served.dm.train_set
    n = len(served.train)
    assert dataset is not None and len(dataset) == served.dm.num_samples == n
    items = [dataset[i] for i in range(n)]
    assert [index for _, index in items] == list(range(n))
    images = torch.stack([image for image, _ in items])
    assert served.seen(images) == served.train
    for i, image in enumerate(images):
        assert torch.equal(image, images_at(served)(torch.tensor([i]))[0]), f"train_images([{i}]) differs from dataset[{i}]"


def check_batched(served: Served) -> None:
    """dataset.__getitems__(indices) pairs each requested index with the image at that position,
    in the order requested (repeats included), the same images as train_images(indices)."""
    dataset = served.dm.train_set
    assert dataset is not None
    n = len(served.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist() + [n - 1, 0, n - 1]
    for start in range(0, len(order), 5):
        requested = order[start : start + 5]
        items = dataset.__getitems__(requested)
        assert [index for _, index in items] == requested
        images = torch.stack([image for image, _ in items])
        assert served.seen(images) == [served.train[i] for i in requested]
        assert torch.equal(images, images_at(served)(torch.tensor(requested)))


def check_epoch(served: Served) -> None:
    """One epoch of the training loader serves every index in [0, N) once, each with the image
    at that position and the same image as train_images(indices)."""
    images, indices = one_epoch(served.dm.train_dataloader())
    n = len(served.train)
    assert indices.dtype == torch.int64 and torch.equal(indices.sort().values, torch.arange(n))
    assert served.seen(images) == [served.train[i] for i in indices.tolist()]
    assert torch.equal(images, images_at(served)(indices))


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES)
def test_dataset_item_i_is_the_image_at_position_i(tmp_path, case):
    check_items(CASES[case](tmp_path, num_workers=0))


@pytest.mark.parametrize("case", CASES)
def test_batched_fetch_pairs_each_index_with_the_image_at_that_position(tmp_path, case):
    check_batched(CASES[case](tmp_path, num_workers=0))


@pytest.mark.parametrize("case", CASES)
def test_an_epoch_in_worker_processes_serves_each_index_once_with_its_image(tmp_path, case):
    served = CASES[case](tmp_path, num_workers=2)
    assert served.dm.train_dataloader().num_workers == 2
    check_epoch(served)


@pytest.mark.parametrize("case", CASES)
def test_held_out_loaders_serve_the_held_out_images_by_position(tmp_path, case):
    """Val and test index their own split, 0 … M-1 in order, each index with its held-out image."""
    served = CASES[case](tmp_path, num_workers=0)
    for stage, loader in (("val", served.dm.val_dataloader()), ("test", served.dm.test_dataloader())):
        expected = served.held_out_ids[stage]
        images, indices = one_epoch(loader)
        assert torch.equal(indices, torch.arange(len(expected)))
        assert served.seen(images) == [(k, False) for k in expected]


def test_every_datamodule_has_a_case():
    """Each datamodule the package exports has a builder, and every builder a case."""
    exported = {
        cls for cls in vars(datamodules).values()
        if inspect.isclass(cls) and issubclass(cls, IndexedDataModule) and cls not in BASES
    }
    assert exported == set(BUILDERS)
    used = {getattr(build, "func", build) for build in CASES.values()}
    assert used == set(BUILDERS.values())


# ----------------------------------------------------------------------------- hflip: mirror images as extra samples


def seen_by_index(served: Served, epoch: int) -> tuple[list[int], dict[int, tuple[int, bool]]]:
    """Epoch `epoch` of the shuffled training loader (its sampler set as Lightning sets it):
    (the order of the indices, index → (id, mirrored) of the image served with it)."""
    loader = served.dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    images, indices = one_epoch(loader)
    return indices.tolist(), dict(zip(indices.tolist(), served.seen(images)))


PER_ITEM_TABLES = ("train_indices", "train_files", "train_labels", "train_volume_index", "train_slice_index")


def per_item_table(dm: IndexedDataModule, name: str) -> list:
    """A per-index table of `dm` (row i = item i; a property or, for labels, a method) as a list."""
    rows = getattr(dm, name)
    rows = rows() if callable(rows) else rows
    return rows.tolist() if isinstance(rows, Tensor) else list(rows)


@pytest.mark.parametrize(
    "build", [celeba, afhq, partial(folder, val_fraction=0.3), partial(oasis, val_fraction=0.34)],
    ids=["celeba", "afhq", "folder", "oasis"],
)
def test_hflip_appends_the_mirror_images_and_leaves_the_rest_as_without_it(tmp_path, build):
    """With hflip: 2N items, the first N bit-identical to those without it and the last N the
    same images flipped along the width; every per-index table twice over; val and test the
    same images under the same indices, not mirrored."""
    plain = build(tmp_path, num_workers=0, seed=3).dm
    mirrored = build(tmp_path, num_workers=0, seed=3, hflip=True).dm  # the same files
    assert mirrored.num_samples == 2 * plain.num_samples
    images = plain.train_images()
    assert torch.equal(mirrored.train_images(), torch.cat([images, images.flip(-1)]))
    tables = [name for name in PER_ITEM_TABLES if hasattr(plain, name)]
    assert "train_indices" in tables and len(tables) >= 2
    for name in tables:
        rows, doubled = (per_item_table(dm, name) for dm in (plain, mirrored))
        assert doubled == rows + rows, name
    for stage in ("val_dataloader", "test_dataloader"):
        (images, indices), (same_images, same_indices) = (one_epoch(getattr(dm, stage)()) for dm in (plain, mirrored))
        assert len(indices) > 0 and torch.equal(indices, same_indices) and torch.equal(images, same_images), stage


@pytest.mark.parametrize("case", ["folder-hflip-held-out-from-disk-cache", "oasis-hflip-subject-split-random-subset"])
def test_hflip_index_keeps_its_image_and_flip_across_shuffled_epochs_and_a_resume(tmp_path, case):
    """Index v serves image v mod N, mirrored iff v ≥ N, in two shuffled epochs (2 workers) and
    after a "resume": a second datamodule on the same settings and the same data written again
    (the folder's set up from its disk cache), under other global random states. Its epochs
    come in the same orders as the first's."""
    served = CASES[case](tmp_path, num_workers=2)
    expected = dict(enumerate(served.train))
    (order_0, seen_0), (order_1, seen_1) = (seen_by_index(served, epoch) for epoch in (0, 1))
    assert order_0 != order_1  # shuffled anew each epoch
    assert seen_0 == seen_1 == expected
    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)
    resumed = CASES[case](tmp_path, num_workers=2)
    assert resumed.dm is not served.dm and resumed.train == served.train
    assert [seen_by_index(resumed, epoch) for epoch in (0, 1)] == [(order_0, expected), (order_1, expected)]


def test_every_image_datamodule_takes_hflip_and_mnist_refuses_it(tmp_path):
    """Mirror images are extra samples of the image sets; digits are not mirror-symmetric, so
    MNIST has no hflip (its constructor refuses the argument, the CLI the flag)."""
    for cls in BUILDERS:
        if cls is not MNISTDataModule:
            assert cls(data_dir=str(tmp_path), hflip=True).hflip, cls.__name__
    assert "hflip" not in inspect.signature(MNISTDataModule).parameters
    with pytest.raises(TypeError, match="hflip"):
        MNISTDataModule(str(tmp_path), hflip=True)


# ----------------------------------------------------------------------------- the checks catch slips


def _next_index(get_item: Callable, get_items: Callable) -> tuple[Callable, Callable]:
    """Item i paired with index i + 1 (the image stays right)."""

    def item(self, i):
        image, j = get_item(self, i)
        return image, (j + 1) % len(self)

    def items(self, indices):
        return [(image, (j + 1) % len(self)) for image, j in get_items(self, indices)]

    return item, items


def _next_image(get_item: Callable, get_items: Callable) -> tuple[Callable, Callable]:
    """Index i paired with the image at position i + 1."""

    def item(self, i):
        return get_item(self, (i + 1) % len(self))[0], i

    def items(self, indices):
        shifted = get_items(self, [(i + 1) % len(self) for i in indices])
        return [(image, i) for (image, _), i in zip(shifted, indices)]

    return item, items


@pytest.mark.parametrize("slip", [_next_index, _next_image], ids=["next-index", "next-image"])
@pytest.mark.parametrize("case", ["mnist-random-subset", "celeba-decoded-on-demand"])
def test_the_checks_fail_on_an_off_by_one_slip_in_either_path(tmp_path, monkeypatch, case, slip):
    """A slip planted in IndexedDataset.__getitem__ fails the item check, one in __getitems__
    the batched and the epoch checks (a guard against the checks going blind)."""
    served = CASES[case](tmp_path, num_workers=0)
    item, items = slip(IndexedDataset.__getitem__, IndexedDataset.__getitems__)
    with monkeypatch.context() as patch:
        patch.setattr(IndexedDataset, "__getitem__", item)
        with pytest.raises(AssertionError):
            check_items(served)
        check_batched(served)
    with monkeypatch.context() as patch:
        patch.setattr(IndexedDataset, "__getitems__", items)
        check_items(served)
        with pytest.raises(AssertionError):
            check_batched(served)
        with pytest.raises(AssertionError):
            check_epoch(served)


def test_the_checks_fail_when_the_mirror_images_are_served_unmirrored(tmp_path, monkeypatch):
    """A slip planted in the loader's mirroring (index v ≥ N served as image v − N unflipped)
    fails the item, batched and epoch checks (the mirror marker is read, not assumed)."""
    served = CASES["celeba-hflip-random-subset-preloaded"](tmp_path, num_workers=0)
    monkeypatch.setattr(indexed_module, "mirror_source", lambda v, n: (v % n, v < 0))
    for check in (check_items, check_batched, check_epoch):
        with pytest.raises(AssertionError):
            check(served)
