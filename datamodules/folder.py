"""Any folder of images as (image, index) pairs.

On disk: `data_dir` itself is the folder; image files (.png .jpg .jpeg .bmp .webp .tif .tiff,
any case) are found recursively in every subfolder, hidden files and folders skipped, and sorted
by relative path, so the index of a file does not depend on the file system. Each image is
centre-cropped to its largest square (or a `crop_size` square) and resized to `image_size`;
`channels=1` converts to grayscale (see images.py for the decoding and for memory use).

Split: with `val_fraction` > 0, a seeded random share of the files is held out for the val and
test loaders; index i is the i-th remaining file (in path order) after the subset. There is no
download; `prepare_data()` checks that the folder holds images.
"""

from __future__ import annotations

from pathlib import Path

from .images import IMAGE_EXTENSIONS, ImageFilesDataModule, list_image_files
from .splits import check_val_fraction, split_train_val


class ImageFolderDataModule(ImageFilesDataModule):
    """An image folder for NeuroSQL: batches of (images float32 (B, C, S, S) in [-1, 1], indices int64 (B,)).

    Args:
        data_dir: the folder of images (searched recursively; see module doc).
        image_size: side S of the square output.
        channels: 3 (RGB; a grayscale file is an error) or 1 (every file converted to grayscale).
        crop_size: side of the centred square cut before resizing (None = largest square).
        val_fraction: share of the files held out (seeded by `seed`) for val/test; 0 = none.
        batch_size, num_workers, subset, subset_mode, seed, pin_memory: as for every datamodule
            (datamodules/base.py); the subset is drawn from the training part.
        memory_budget_mb, disk_cache: what is held in memory / cached on disk (images.py); the
            cache goes to `<data_dir>/.neurosql_cache/`.
        hflip: add each training image mirrored left-right, 2N items (datamodules/base.py).
    """

    dataset_name = "image folder"

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: int = 64,
        channels: int = 3,
        crop_size: int | None = None,
        val_fraction: float = 0.0,
        batch_size: int = 128,
        num_workers: int = 0,
        subset: int | None = None,
        subset_mode: str = "first",
        seed: int = 0,
        memory_budget_mb: int = 2048,
        disk_cache: bool = True,
        pin_memory: bool = False,
        hflip: bool = False,
    ) -> None:
        super().__init__(
            data_dir, image_size, channels, crop_size, batch_size, num_workers, subset, subset_mode,
            seed, memory_budget_mb, disk_cache, pin_memory, hflip,
        )
        self.save_hyperparameters()
        check_val_fraction(val_fraction)
        self.val_fraction = val_fraction

    @property
    def root(self) -> Path:
        return self.data_dir

    def layout(self) -> str:
        return (
            f"    {self.root}/**/<name>{{{','.join(IMAGE_EXTENSIONS)}}}   (any subfolders, any file names)\n"
            "Point data_dir at the folder that holds your images (e.g. --data.data_dir path/to/images)."
        )

    def prepare_data(self) -> None:
        """No download: check that the folder exists and holds images; assigns no state."""
        self._list_files()

    def _list_files(self) -> list[Path]:
        if not self.root.is_dir():
            raise self.not_found(f"{self.root} does not exist or is not a folder.")
        files = list_image_files(self.root)
        if not files:
            raise self.not_found(f"{self.root} holds no image files (searched recursively).")
        return files

    def find_split_files(self) -> dict[str, list[Path]]:
        files = self._list_files()
        train, val = split_train_val(len(files), self.val_fraction, self.seed)
        held_out = [files[i] for i in val.tolist()]
        return {"train": [files[i] for i in train.tolist()], "val": held_out, "test": held_out}
