"""AFHQ (Animal Faces-HQ, StarGAN v2) as (image, index) pairs, with its official train/val split.

On disk: the official release's layout (the StarGAN v2 `download.sh afhq-dataset` zip),

    <data_dir>/afhq/train/{cat,dog,wild}/*.jpg   (about 5k 512 × 512 images per class)
    <data_dir>/afhq/val/{cat,dog,wild}/*.jpg     (500 per class)

`.jpeg` and `.png` files are read too. `classes` keeps only some classes (e.g. ["cat"]). Index
i is the i-th training image in the order (class in cat, dog, wild order; then file path), after
the subset. Images are resized from 512 to `image_size` (64); see images.py for the decoding
and for what is held in memory. The val split serves both the validation and test loaders.

Download: the official zip (Dropbox link from StarGAN v2's download.sh), streamed to a temporary
file beside the data, its member names checked, extracted into a temporary folder and renamed
into place only when complete. No digest of the zip is published, so the extracted layout is
what is checked. On failure the error shows the layout and where to get the zip by hand.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from .download import FETCH_ERRORS, extract_zip_tree, fetch_url_to_file
from .errors import CorruptFileError, dataset_not_found
from .images import ImageFilesDataModule, list_image_files

log = logging.getLogger(__name__)

AFHQ_URL = "https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1"
AFHQ_PAGE = "https://github.com/clovaai/stargan-v2 (README, 'Animal Faces-HQ dataset')"
AFHQ_CLASSES: tuple[str, ...] = ("cat", "dog", "wild")
AFHQ_SPLITS: tuple[str, ...] = ("train", "val")
AFHQ_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
FETCH_TIMEOUT_S = 60.0


def afhq_root(data_dir: str | os.PathLike[str]) -> Path:
    """`<data_dir>/afhq`, the folder the official zip extracts to."""
    return Path(data_dir) / "afhq"


def afhq_layout(root: Path) -> str:
    return (
        f"    {root}/train/cat/*.jpg  {root}/train/dog/*.jpg  {root}/train/wild/*.jpg\n"
        f"    {root}/val/cat/*.jpg    {root}/val/dog/*.jpg    {root}/val/wild/*.jpg\n"
        "Get it by hand: download the official zip\n"
        f"    {AFHQ_URL}\n"
        f"    (from {AFHQ_PAGE}) and unzip it into {root.parent}, which creates {root.name}/."
    )


def check_classes(classes: list[str] | None) -> tuple[str, ...]:
    """The selected classes in canonical (cat, dog, wild) order; ValueError for unknown ones."""
    if classes is None:
        return AFHQ_CLASSES
    unknown = sorted(set(classes) - set(AFHQ_CLASSES))
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {list(AFHQ_CLASSES)} (or None = all), got {classes}")
    return tuple(c for c in AFHQ_CLASSES if c in classes)


def missing_afhq_dirs(root: Path, classes: tuple[str, ...] = AFHQ_CLASSES) -> list[str]:
    """The `<split>/<class>` folders of the layout that are absent from `root`."""
    return [f"{split}/{c}/" for split in AFHQ_SPLITS for c in classes if not (root / split / c).is_dir()]


def download_afhq(
    data_dir: str | os.PathLike[str], classes: tuple[str, ...] = AFHQ_CLASSES, timeout: float = FETCH_TIMEOUT_S
) -> None:
    """Make sure `<data_dir>/afhq` holds both splits of `classes`, downloading the official zip if
    not. Raises DatasetNotFoundError (layout, where to get it, why the download failed) when the
    download fails or `<data_dir>/afhq` exists but is incomplete (it is never overwritten), and
    CorruptFileError when the downloaded archive is corrupt or not laid out as expected."""
    data_dir = Path(data_dir)
    root = afhq_root(data_dir)
    missing = missing_afhq_dirs(root, classes)
    if not missing:
        return
    if root.exists():
        raise dataset_not_found(
            "AFHQ", f"{root} exists but lacks {', '.join(missing)}.", afhq_layout(root),
            hint=f"It is incomplete: complete it by hand, or delete {root} so that it is downloaded again.",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("AFHQ: downloading %s into %s", AFHQ_URL, root)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".afhq-download-") as tmp:
        archive = Path(tmp) / "afhq.zip"
        try:
            fetch_url_to_file(AFHQ_URL, archive, timeout=timeout)
        except FETCH_ERRORS as e:
            attempt = f"{AFHQ_URL}: {type(e).__name__}: {e}"
            raise dataset_not_found("AFHQ", f"no {root}.", afhq_layout(root), [attempt]) from e
        try:
            extract_zip_tree(archive, "afhq", root, what=f"AFHQ archive from {AFHQ_URL}")
        except (zipfile.BadZipFile, ValueError) as e:
            raise CorruptFileError(
                f"the AFHQ archive downloaded from {AFHQ_URL} is corrupt or not the official one "
                f"({type(e).__name__}: {e}); nothing was written to {root}. Try again, or get it by hand:\n"
                + afhq_layout(root)
            ) from e
    missing = missing_afhq_dirs(root)
    if missing:
        raise CorruptFileError(
            f"the AFHQ archive from {AFHQ_URL} extracted to {root} lacks {', '.join(missing)}; it is "
            f"not the official release. Delete {root} and get the data by hand:\n" + afhq_layout(root)
        )


class AFHQDataModule(ImageFilesDataModule):
    """AFHQ for NeuroSQL: batches of (images float32 (B, 3, S, S) in [-1, 1], indices int64 (B,)).

    Args:
        data_dir: root; the data lives in `<data_dir>/afhq` (official layout, see module doc).
        image_size: side S of the square output (64; the files are 512 × 512).
        classes: keep only these of "cat", "dog", "wild" (None = all three).
        channels: 3 (RGB) or 1 (grayscale).
        crop_size: side of the centred square cut before resizing (None = the whole square image).
        batch_size, num_workers, subset, subset_mode, seed, pin_memory: as for every datamodule
            (datamodules/base.py); the subset is drawn from the training split.
        memory_budget_mb, disk_cache: what is held in memory / cached on disk (images.py).
        hflip: add each training image mirrored left-right, 2N items (datamodules/base.py).
        download: let `prepare_data()` download the official zip when the data is missing.

    After `setup()`, besides the common state: `train_labels()` int64 (N,), the class of each
    training image as its position in AFHQ_CLASSES (0 cat, 1 dog, 2 wild).
    """

    dataset_name = "AFHQ"

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 64,
        classes: list[str] | None = None,
        channels: int = 3,
        crop_size: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        subset: int | None = None,
        subset_mode: str = "first",
        seed: int = 0,
        memory_budget_mb: int = 2048,
        disk_cache: bool = True,
        download: bool = True,
        pin_memory: bool = False,
        hflip: bool = False,
    ) -> None:
        super().__init__(
            data_dir, image_size, channels, crop_size, batch_size, num_workers, subset, subset_mode,
            seed, memory_budget_mb, disk_cache, pin_memory, hflip,
        )
        self.save_hyperparameters()
        self.classes = check_classes(classes)
        self.download = download

    @property
    def root(self) -> Path:
        return afhq_root(self.data_dir)

    def layout(self) -> str:
        return afhq_layout(self.root)

    def prepare_data(self) -> None:
        """Download (with `download`) or check that the files are there; assigns no state."""
        if self.download:
            download_afhq(self.data_dir, self.classes)
        self._check_present()

    def _check_present(self) -> None:
        missing = missing_afhq_dirs(self.root, self.classes)
        if missing:
            hint = "" if self.download else "(download=False: set download=True to download the official zip.)"
            raise self.not_found(f"{', '.join(missing)} missing from {self.root}.", hint=hint)

    def find_split_files(self) -> dict[str, list[Path]]:
        self._check_present()
        splits: dict[str, list[Path]] = {}
        for split in AFHQ_SPLITS:
            files: list[Path] = []
            for c in self.classes:
                found = list_image_files(self.root / split / c, AFHQ_EXTENSIONS)
                if not found:
                    raise self.not_found(f"no {'/'.join(AFHQ_EXTENSIONS)} images in {self.root / split / c}.")
                files.extend(found)
            splits[split] = files
        splits["test"] = splits["val"]
        return splits

    def train_labels(self) -> Tensor:
        """int64 (N,): class of each training image (0 cat, 1 dog, 2 wild), row i = item i."""
        names = [p.relative_to(self.root).parts[1] for p in self.train_files]  # <split>/<class>/...
        return torch.tensor([AFHQ_CLASSES.index(c) for c in names], dtype=torch.int64)
