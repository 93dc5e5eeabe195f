"""LightningDataModules for NeuroSQL: every dataset yields (image, index) pairs, images in [-1, 1]."""

from datamodules.errors import ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from datamodules.indexed import IndexedDataset, UInt8ImageDataset
from datamodules.mnist import MNISTDataModule

__all__ = [
    "ChecksumMismatchError",
    "CorruptFileError",
    "DatasetNotFoundError",
    "IndexedDataset",
    "MNISTDataModule",
    "UInt8ImageDataset",
]
