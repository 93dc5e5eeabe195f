"""LightningDataModules for NeuroSQL: every dataset yields (image, index) pairs, images in [-1, 1].

MNIST, CelebA, AFHQ, OASIS (axial MRI slices), Emoji3D (colour 64 px, from npm) and any folder
of images; the protocol they share
is in base.py, the image-file machinery in images.py. `neurosql prepare NAME`
downloads (or checks) the data of a config in experiments/configs/data/.
"""

from .afhq import AFHQDataModule
from .base import IndexedDataModule
from .celeba import CelebADataModule
from .emoji3d import Emoji3DDataModule
from .errors import ChannelMismatchError, ChecksumMismatchError, CorruptFileError, DatasetNotFoundError
from .folder import ImageFolderDataModule
from .images import ImageFilesDataModule
from .indexed import IndexedDataset, UInt8ImageDataset
from .mnist import MNISTDataModule
from .oasis import OASISDataModule

__all__ = [
    "AFHQDataModule",
    "CelebADataModule",
    "ChannelMismatchError",
    "ChecksumMismatchError",
    "CorruptFileError",
    "DatasetNotFoundError",
    "Emoji3DDataModule",
    "ImageFilesDataModule",
    "ImageFolderDataModule",
    "IndexedDataModule",
    "IndexedDataset",
    "MNISTDataModule",
    "OASISDataModule",
    "UInt8ImageDataset",
]
