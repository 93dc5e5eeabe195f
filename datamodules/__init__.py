"""LightningDataModules for NeuroSQL: every dataset yields (image, index) pairs, images in [-1, 1].

MNIST, CelebA, AFHQ, OASIS (axial MRI slices) and any folder of images; the protocol they share
is in base.py, the image-file machinery in images.py. `python -m datamodules.prepare NAME`
downloads (or checks) the data of a config in experiments/configs/data/.
"""

from datamodules.afhq import AFHQDataModule
from datamodules.base import IndexedDataModule
from datamodules.celeba import CelebADataModule
from datamodules.errors import ChannelMismatchError, ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from datamodules.folder import ImageFolderDataModule
from datamodules.images import ImageFilesDataModule
from datamodules.indexed import IndexedDataset, UInt8ImageDataset
from datamodules.mnist import MNISTDataModule
from datamodules.oasis import OASISDataModule

__all__ = [
    "AFHQDataModule",
    "CelebADataModule",
    "ChannelMismatchError",
    "ChecksumMismatchError",
    "CorruptFileError",
    "DatasetNotFoundError",
    "ImageFilesDataModule",
    "ImageFolderDataModule",
    "IndexedDataModule",
    "IndexedDataset",
    "MNISTDataModule",
    "OASISDataModule",
    "UInt8ImageDataset",
]
