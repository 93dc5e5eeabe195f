"""CelebA (aligned & cropped faces) as (image, index) pairs, with its official splits.

On disk: torchvision's layout,

    <data_dir>/celeba/img_align_celeba/000001.jpg … 202599.jpg   (img_align_celeba.zip, extracted)
    <data_dir>/celeba/list_eval_partition.txt                      ("000001.jpg 0" per line)

(the Kaggle mirror's `list_eval_partition.csv`, "image_id,partition" with a header line, is
read too when the .txt is absent). Partition 0 = train (162,770 images), 1 = valid (19,867),
2 = test (19,962); index i is the i-th training image in the partition file's order, after
the subset. Images are 178 × 218: the usual centred 178 × 178 crop (`crop_size`), resized to
`image_size` (64) — see images.py for the decoding and for what is held in memory.

Download: torchvision's own CelebA code (Google Drive through `gdown`, md5-checked) into a
temporary folder beside the data, then moved into place. Drive often refuses (quota) and it
fails outright without network; the error then lists the files to fetch by hand and where.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from pathlib import Path

from .errors import CorruptFileError, dataset_not_found
from .images import ImageFilesDataModule

log = logging.getLogger(__name__)

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGE_DIR = "img_align_celeba"
PARTITION_TXT = "list_eval_partition.txt"
PARTITION_CSV = "list_eval_partition.csv"
SPLITS = {"train": 0, "val": 1, "test": 2}


def celeba_root(data_dir: str | os.PathLike[str]) -> Path:
    """`<data_dir>/celeba`, the folder torchvision also uses."""
    return Path(data_dir) / "celeba"


def celeba_layout(root: Path) -> str:
    return (
        f"    {root}/\n"
        f"        {IMAGE_DIR}/000001.jpg … 202599.jpg   (img_align_celeba.zip, extracted here)\n"
        f"        {PARTITION_TXT}                      (one line per image: \"000001.jpg 0\";\n"
        "                                                    0 = train, 1 = valid, 2 = test)\n"
        "Get them by hand from the CelebA page\n"
        f"    {CELEBA_URL}\n"
        "    (\"Align&Cropped Images\" → Img/img_align_celeba.zip; \"Train/Val/Test Partitions\" →\n"
        f"    Eval/{PARTITION_TXT}; Google Drive or Baidu), and unzip the images into {root}\n"
        f"    so that they end up in {root / IMAGE_DIR}/. The other annotation files are not needed."
    )


def partition_file(root: Path) -> Path | None:
    """The partition list in `root`: the official .txt, else the Kaggle .csv, else None."""
    for name in (PARTITION_TXT, PARTITION_CSV):
        if (root / name).is_file():
            return root / name
    return None


def read_partition(path: Path) -> dict[int, list[str]]:
    """Partition list → {0: train names, 1: valid names, 2: test names}, each in file order.

    Reads the official "name split" lines (space separated) or the Kaggle CSV
    ("image_id,partition" header). Raises CorruptFileError naming the file and line for a line
    that is not "<name>.jpg <0|1|2>", or for a name listed twice."""
    splits: dict[int, list[str]] = {0: [], 1: [], 2: []}
    seen: set[str] = set()
    first_line = 1
    with open(path, newline="") as f:
        if path.suffix == ".csv":
            rows = list(csv.reader(f))
            if rows and rows[0] and not rows[0][-1].strip().isdigit():  # the header line
                rows, first_line = rows[1:], 2
        else:
            rows = [line.split() for line in f]
    for number, row in enumerate(rows, start=first_line):
        if not row or all(not cell.strip() for cell in row):
            continue
        name, split = (row[0].strip(), row[1].strip()) if len(row) == 2 else ("", "")
        if not name or split not in ("0", "1", "2"):
            raise CorruptFileError(
                f"{path}, line {number}: expected '<image>.jpg <0|1|2>', got {' '.join(row)!r}. The "
                f"partition list is corrupt: replace it with the official {PARTITION_TXT} ({CELEBA_URL})."
            )
        if name in seen:
            raise CorruptFileError(f"{path}, line {number}: {name} is listed twice; the partition list is corrupt.")
        seen.add(name)
        splits[int(split)].append(name)
    return splits


def missing_celeba_items(root: Path) -> list[str]:
    """What of the layout is absent from `root` (the image folder, the partition list)."""
    missing = []
    if not (root / IMAGE_DIR).is_dir():
        missing.append(f"{IMAGE_DIR}/ (extracted from img_align_celeba.zip)")
    if partition_file(root) is None:
        missing.append(PARTITION_TXT)
    return missing


def _download_with_torchvision(root: Path) -> None:
    """torchvision's CelebA download (all its files, md5-checked, zip extracted) into a temporary
    root beside `root`; the image folder and the annotation lists missing from `root` are then
    moved in. Raises whatever torchvision raises when Google Drive cannot be reached."""
    import torchvision  # imported here: only this source needs it

    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".celeba-torchvision-") as tmp:
        torchvision.datasets.CelebA(root=tmp, split="all", target_type=[], download=True)
        fetched = Path(tmp) / "celeba"
        root.mkdir(parents=True, exist_ok=True)
        for item in sorted(fetched.iterdir()):
            if item.suffix != ".zip" and not (root / item.name).exists():
                os.replace(item, root / item.name)


def download_celeba(data_dir: str | os.PathLike[str]) -> None:
    """Make sure `<data_dir>/celeba` holds the images and the partition list, downloading with
    torchvision if not. Raises DatasetNotFoundError (layout, files, where to get them, and why
    the download failed) when that does not work."""
    root = celeba_root(data_dir)
    if not missing_celeba_items(root):
        return
    log.info("CelebA: downloading into %s with torchvision (Google Drive)", root)
    try:
        _download_with_torchvision(root)
    except Exception as e:  # RuntimeError (no gdown, md5), gdown's errors, OSError, ...
        attempt = f"torchvision.datasets.CelebA(download=True) (Google Drive): {type(e).__name__}: {str(e).strip()}"
        missing = missing_celeba_items(root)
        problem = f"{', '.join(missing)} missing from {root}."
        raise dataset_not_found("CelebA", problem, celeba_layout(root), [attempt]) from e


class CelebADataModule(ImageFilesDataModule):
    """CelebA for NeuroSQL: batches of (images float32 (B, 3, S, S) in [-1, 1], indices int64 (B,)).

    Args:
        data_dir: root; the data lives in `<data_dir>/celeba` (torchvision's layout, module doc).
        image_size: side S of the square output (64).
        crop_size: side of the centred square cut from the 178 × 218 image before resizing (178).
        channels: 3 (RGB) or 1 (grayscale).
        batch_size, num_workers, subset, subset_mode, seed, pin_memory: as for every datamodule
            (see datamodules/base.py); the subset is drawn from the official training split.
        memory_budget_mb, disk_cache: what is held in memory / cached on disk (images.py).
        hflip: add each training image mirrored left-right, 2N items (datamodules/base.py).
        download: let `prepare_data()` try torchvision's download when files are missing.

    Loaders: train = partition 0, val = partition 1, test = partition 2.
    """

    dataset_name = "CelebA"

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 64,
        crop_size: int = 178,
        channels: int = 3,
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
        self.download = download

    @property
    def root(self) -> Path:
        return celeba_root(self.data_dir)

    def layout(self) -> str:
        return celeba_layout(self.root)

    def prepare_data(self) -> None:
        """Download (with `download`) or check that the files are there; assigns no state."""
        if self.download:
            download_celeba(self.data_dir)
        else:
            self._check_present()

    def _check_present(self) -> None:
        missing = missing_celeba_items(self.root)
        if missing:
            hint = "" if self.download else "(download=False: set download=True to try torchvision's download.)"
            raise self.not_found(f"{', '.join(missing)} missing from {self.root}.", hint=hint)

    def find_split_files(self) -> dict[str, list[Path]]:
        self._check_present()
        path = partition_file(self.root)
        assert path is not None  # _check_present
        names = read_partition(path)
        if not names[SPLITS["train"]]:
            raise CorruptFileError(f"{path}: no image is in partition 0 (train); the partition list is corrupt.")
        images = self.root / IMAGE_DIR
        return {split: [images / name for name in names[code]] for split, code in SPLITS.items()}
