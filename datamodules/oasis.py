"""OASIS-1 brain MRI (or any folder of NIfTI volumes) as 2-D axial slices with (image, index) pairs.

On disk, under `<data_dir>/<subdir>` (subdir "oasis" by default):
- layout "oasis": OASIS-1 cross-sectional as distributed (https://sites.wustl.edu/oasisbrains/,
  after accepting the data-use agreement; disc1 … disc12 tarballs, extracted), e.g.
      disc1/OAS1_0001_MR1/PROCESSED/MPRAGE/T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr (+ .img)
  i.e. every `**/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.{hdr,nii,nii.gz}`: the atlas-registered
  (Talairach T88), bias-corrected, skull-stripped image, Analyze 7.5, 176 × 208 × 176 at 1 mm.
- layout "nifti": every `**/*.nii` and `**/*.nii.gz` volume found recursively.
- layout "auto": "oasis" if such files are there, else "nifti".
`pattern` (a glob relative to that folder, `**` recursive) replaces the layout's file pattern.
Hidden files and folders are skipped; volumes are sorted by relative path.

Per volume (all volumes are read with nibabel):
1. orientation: `nibabel.as_closest_canonical` → RAS+ voxel axes, so the axial axis is the last
   one (inferior → superior) for every file. (Analyze 7.5 stores no orientation; nibabel assumes
   its default LAS affine, so for the OASIS T88_111 images x = 176 left–right, y = 208
   posterior–anterior, z = 176 axial.) A 2-D slice is shown with anterior at the top and the
   subject's right on the image's right (neurological convention).
2. intensities: per volume, the `intensity_percentiles` (1st, 99th) of all voxels map to 0 and 1,
   clipped; NaN/inf voxels count as 0. Served as [-1, 1] (stored as uint8: 8 bits per pixel).
3. slices: the axial slices in the central band of `slice_band` × the axial extent; of those,
   the ones whose "brain" share (pixels above 10 % of the normalised range) is at least
   `min_brain_fraction`; of those, `slices_per_volume` evenly spread ones (all if fewer).
4. each slice is padded to a square with background (−1) and resized (bilinear, antialiased)
   to `image_size`; 1 channel.

Split: by subject, never by slice: subjects (OAS1_xxxx, so an MR2 rescan goes with its MR1;
`sub-xxx` for BIDS names; else one subject per file) are split with `val_fraction`, seeded by
`seed`. Index i is the i-th training slice (volume order, then inferior → superior) after the
subset.

Cache: the extracted slices of all volumes are stored once under
`<data_dir>/<subdir>/.neurosql_cache/` (keyed by the files and the slice settings, see
cache.py), so later runs do not read the volumes again. There is no download (OASIS needs a
registration): `prepare_data()` checks that volumes are there and otherwise explains where to
get them and where to put them.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from torch import Tensor

from .base import IndexedDataModule, check_image_size
from .cache import cache_path, file_signature, load_cached, save_cached
from .errors import CorruptFileError, dataset_not_found
from .indexed import IndexedDataset, UInt8ImageDataset, uint8_to_signed
from .splits import check_val_fraction, select_subset, split_train_val

log = logging.getLogger(__name__)

OASIS_URL = "https://sites.wustl.edu/oasisbrains/ (OASIS-1: Cross-sectional data, disc1 … disc12)"
LAYOUTS = ("auto", "oasis", "nifti")
OASIS_PATTERNS: tuple[str, ...] = tuple(
    f"**/PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc{ext}" for ext in (".hdr", ".nii", ".nii.gz")
)
NIFTI_PATTERNS: tuple[str, ...] = ("**/*.nii", "**/*.nii.gz")
BRAIN_LEVEL = 0.1  # a pixel is "brain" when its normalised intensity exceeds 10 % of the range
_SUBJECT_RES = (re.compile(r"OAS\d_\d{4}"), re.compile(r"sub-[A-Za-z0-9]+"))


# ----------------------------------------------------------------------------- files on disk


def oasis_layout(root: Path) -> str:
    return (
        "    OASIS-1 as distributed (layout \"oasis\"), e.g.\n"
        f"    {root}/disc1/OAS1_0001_MR1/PROCESSED/MPRAGE/T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr\n"
        f"    {root}/disc1/OAS1_0001_MR1/PROCESSED/MPRAGE/T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.img\n"
        "    (any */PROCESSED/MPRAGE/T88_111/*_t88_masked_gfc.hdr + .img pair below it is used)\n"
        f"    or any NIfTI volumes (layout \"nifti\"): {root}/**/*.nii or *.nii.gz\n"
        "OASIS needs a manual download (registration and data-use agreement): get the\n"
        f"    OASIS-1 cross-sectional discs from {OASIS_URL}\n"
        f"    and extract the oasis_cross-sectional_disc*.tar.gz files into {root}."
    )


def _glob_sorted(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Files under `root` matching any pattern, hidden ones skipped, sorted by relative path."""
    found = {}
    for pattern in patterns:
        for path in root.glob(pattern):
            rel = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found[rel.as_posix()] = path
    return [found[k] for k in sorted(found)]


def find_volumes(root: Path, layout: str = "auto", pattern: str | None = None) -> list[Path]:
    """The volume files under `root` for a layout (or `pattern`), sorted by relative path."""
    if not root.is_dir():
        return []
    if pattern is not None:
        return _glob_sorted(root, (pattern,))
    if layout in ("auto", "oasis"):
        found = _glob_sorted(root, OASIS_PATTERNS)
        if found or layout == "oasis":
            return found
    return _glob_sorted(root, NIFTI_PATTERNS)


def subject_id(relative: str) -> str:
    """The subject a volume belongs to: OAS1_0001 (also for OAS1_0001_MR2), sub-XX (BIDS), or
    else the file's relative path without extension (one subject per file)."""
    for regex in _SUBJECT_RES:
        match = regex.search(relative)
        if match:
            return match.group(0)
    return re.sub(r"\.(nii\.gz|nii|hdr|img)$", "", relative)


def _companion_files(path: Path) -> list[Path]:
    """The files a volume consists of: `.hdr` + `.img` for Analyze, else just the file."""
    return [path, path.with_suffix(".img")] if path.suffix == ".hdr" else [path]


def _corrupt(path: Path, problem: str) -> CorruptFileError:
    return CorruptFileError(
        f"{path}: {problem}. The volume is truncated or corrupt (an interrupted download or "
        "extraction?): replace it with a good copy, or delete it (and its .img/.hdr partner)."
    )


def load_volume(path: Path) -> np.ndarray:
    """Read a volume (Analyze .hdr/.img, .nii, .nii.gz) → float32 (X, Y, Z) in RAS+ voxel order
    (axial = last axis), NaN/inf set to 0. Raises CorruptFileError naming the file for a missing
    .img, a data file shorter than its header says, anything nibabel cannot read, or a volume
    that is not 3-D (trailing singleton axes, as in OASIS's 176 × 208 × 176 × 1, are dropped)."""
    if path.suffix == ".hdr" and not path.with_suffix(".img").is_file():
        raise _corrupt(path, f"its image data file {path.with_suffix('.img').name} is missing (Analyze volumes are .hdr + .img pairs)")
    try:
        image = nib.load(path)
        header = image.header
        data_file = path.with_suffix(".img") if path.suffix == ".hdr" else path
        if data_file.suffix in (".img", ".nii"):  # uncompressed: compare the size with the header
            need = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
            have = data_file.stat().st_size
            if have < need:
                raise _corrupt(data_file, f"{have} bytes, but its header describes {need}")
        image = nib.as_closest_canonical(image)
        volume = np.asarray(image.get_fdata(dtype=np.float32))
    except CorruptFileError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as e:
        raise _corrupt(path, f"cannot be read by nibabel ({type(e).__name__}: {str(e).strip()})") from e
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise _corrupt(path, f"expected a 3-D volume, got shape {volume.shape}")
    return np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)


# ----------------------------------------------------------------------------- slices


def normalise_volume(volume: np.ndarray, percentiles: tuple[float, float], path: Path) -> np.ndarray:
    """Per-volume robust scaling: percentile lo → 0, hi → 1, clipped to [0, 1] (float32)."""
    lo, hi = np.percentile(volume, percentiles)
    if not hi > lo:
        raise _corrupt(path, f"its intensities are constant between the {percentiles} percentiles ({lo:g})")
    return np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def select_slices(norm: np.ndarray, slice_band: float, slices_per_volume: int, min_brain_fraction: float) -> np.ndarray:
    """Axial slice numbers (sorted) of a normalised volume (X, Y, Z), chosen as in the module doc."""
    depth = norm.shape[2]
    width = min(depth, max(1, int(round(slice_band * depth))))
    first = (depth - width) // 2
    band = np.arange(first, first + width)
    brain = (norm[:, :, band] > BRAIN_LEVEL).mean(axis=(0, 1))
    keep = band[brain >= min_brain_fraction]
    if len(keep) > slices_per_volume:  # evenly spread: centres of k equal parts of the list
        positions = np.floor((np.arange(slices_per_volume) + 0.5) * len(keep) / slices_per_volume).astype(int)
        keep = keep[positions]
    return keep


def slices_to_images(norm: np.ndarray, slices: np.ndarray, image_size: int) -> np.ndarray:
    """Axial slices of a normalised RAS volume → uint8 (k, 1, S, S): rows anterior → posterior,
    columns left → right (subject's right on the image's right), padded square with 0, resized."""
    planes = np.ascontiguousarray(norm[:, :, slices].transpose(2, 1, 0)[:, ::-1, :])  # (k, Y: A→P, X: L→R)
    k, h, w = planes.shape
    side = max(h, w)
    square = np.zeros((k, side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[:, top : top + h, left : left + w] = planes
    resized = torch.from_numpy(square).unsqueeze(1)
    if side != image_size:
        resized = F.interpolate(resized, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).numpy()


# ----------------------------------------------------------------------------- datamodule


class OASISDataModule(IndexedDataModule):
    """OASIS-1 axial slices for NeuroSQL: batches of (images float32 (B, 1, S, S) in [-1, 1], indices int64 (B,)).

    Args:
        data_dir: root; volumes are searched under `<data_dir>/<subdir>`.
        image_size: side S of the square output (64).
        subdir: folder below data_dir that holds the volumes ("oasis"; "" = data_dir itself).
        layout: "oasis" (OASIS-1 T88_111 masked images), "nifti" (any *.nii / *.nii.gz) or "auto".
        pattern: a glob below that folder (e.g. "**/*_t88_gfc.hdr") replacing the layout's pattern.
        slice_band: central share of the axial extent that slices are taken from (0 < b ≤ 1).
        slices_per_volume: at most this many slices per volume, evenly spread over the band.
        min_brain_fraction: a slice needs at least this share of brain pixels (0 = no check).
        intensity_percentiles: (low, high) percentiles of each volume mapped to −1 and 1.
        val_fraction: share of the subjects held out (seeded by `seed`) for val/test.
        batch_size, num_workers, subset, subset_mode, seed, pin_memory: as for every datamodule
            (datamodules/base.py); the subset is drawn from the training slices.
        disk_cache: store the extracted slices under `<folder>/.neurosql_cache/` and reuse them.
        hflip: add each training slice mirrored left-right (datamodules/base.py): brains are
            roughly left-right symmetric; the cache holds each slice once.

    After `setup()`, besides the common state: `volumes` (the volume files), `train_volume_index`
    and `train_slice_index` (source volume and axial slice of each training image),
    `train_subjects` and `val_subjects` (sorted subject ids).
    """

    dataset_name = "OASIS"

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 64,
        subdir: str = "oasis",
        layout: str = "auto",
        pattern: str | None = None,
        slice_band: float = 0.4,
        slices_per_volume: int = 20,
        min_brain_fraction: float = 0.05,
        intensity_percentiles: tuple[float, float] = (1.0, 99.0),
        val_fraction: float = 0.1,
        batch_size: int = 128,
        num_workers: int = 0,
        subset: int | None = None,
        subset_mode: str = "first",
        seed: int = 0,
        disk_cache: bool = True,
        pin_memory: bool = False,
        hflip: bool = False,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, subset, subset_mode, seed, pin_memory, hflip)
        self.save_hyperparameters()
        check_image_size(image_size)
        check_val_fraction(val_fraction)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not 0.0 < slice_band <= 1.0:
            raise ValueError(f"slice_band must be in (0, 1] (share of the axial extent), got {slice_band}")
        if slices_per_volume < 1:
            raise ValueError(f"slices_per_volume must be ≥ 1, got {slices_per_volume}")
        if not 0.0 <= min_brain_fraction <= 1.0:
            raise ValueError(f"min_brain_fraction must be in [0, 1], got {min_brain_fraction}")
        lo, hi = intensity_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"intensity_percentiles must satisfy 0 ≤ low < high ≤ 100, got {intensity_percentiles}")
        self.image_size = image_size
        self.image_shape = (1, image_size, image_size)
        self.root = self.data_dir / subdir if subdir else self.data_dir
        self.layout = layout
        self.pattern = pattern
        self.slice_band = slice_band
        self.slices_per_volume = slices_per_volume
        self.min_brain_fraction = min_brain_fraction
        self.intensity_percentiles = (float(lo), float(hi))
        self.val_fraction = val_fraction
        self.disk_cache = disk_cache
        self._volumes: list[Path] | None = None
        self._train_images: Tensor | None = None  # uint8 (N, 1, S, S)
        self._train_volume_index: Tensor | None = None
        self._train_slice_index: Tensor | None = None
        self._subjects: tuple[list[str], list[str]] | None = None

    # --------------------------------------------------------------- Lightning hooks

    def prepare_data(self) -> None:
        """No download exists: check that volumes are there (else a not-found error with the
        layout and where to get OASIS); assigns no state."""
        self._find_volumes()

    def setup(self, stage: str | None = None) -> None:
        """Extract (or read from the cache) the slices, split by subject, pick the subset."""
        if self.train_set is not None:
            return
        volumes = self._find_volumes()
        images, volume_index, slice_index = self._slices(volumes)
        relative = [v.relative_to(self.root).as_posix() for v in volumes]
        subjects = [subject_id(r) for r in relative]
        unique = sorted(set(subjects))
        train_pos, val_pos = split_train_val(len(unique), self.val_fraction, self.seed)
        val_subjects = {unique[i] for i in val_pos.tolist()}
        in_val = torch.tensor([subjects[v] in val_subjects for v in volume_index.tolist()], dtype=torch.bool)
        train_rows = torch.nonzero(~in_val).squeeze(1)
        val_rows = torch.nonzero(in_val).squeeze(1)
        if len(train_rows) == 0:
            raise ValueError(f"OASIS: no training slice left (val_fraction={self.val_fraction}, {len(unique)} subjects)")
        indices = select_subset(len(train_rows), self.subset, self.subset_mode, self.seed)
        rows = train_rows[indices]
        self._volumes = volumes
        self._train_indices = indices
        self._train_images = images[rows]  # indexing copies: nothing stays mapped from the cache
        self._train_volume_index = volume_index[rows]
        self._train_slice_index = slice_index[rows]
        self._subjects = ([unique[i] for i in train_pos.tolist()], sorted(val_subjects))
        self.train_set = self._training_set(UInt8ImageDataset(self._train_images))
        self.val_set = IndexedDataset(UInt8ImageDataset(images[val_rows]))
        self.test_set = self.val_set

    # --------------------------------------------------------------- state after setup

    def _train_images_at(self, indices: Tensor | None) -> Tensor:
        images = self._require(self._train_images, "train_images")
        return uint8_to_signed(images if indices is None else images[indices])

    @property
    def volumes(self) -> list[Path]:
        """Every volume file used (train and val), in index order of `train_volume_index`."""
        return self._require(self._volumes, "volumes")

    @property
    def train_volume_index(self) -> Tensor:
        """int64 (N,): position in `volumes` of the volume each training image comes from (row i = item i)."""
        return self._per_item(self._require(self._train_volume_index, "train_volume_index"))

    @property
    def train_slice_index(self) -> Tensor:
        """int64 (N,): axial slice number (canonical RAS volume) of each training image (row i = item i)."""
        return self._per_item(self._require(self._train_slice_index, "train_slice_index"))

    @property
    def train_subjects(self) -> list[str]:
        return self._require(self._subjects, "train_subjects")[0]

    @property
    def val_subjects(self) -> list[str]:
        return self._require(self._subjects, "val_subjects")[1]

    # --------------------------------------------------------------- helpers

    def _find_volumes(self) -> list[Path]:
        volumes = find_volumes(self.root, self.layout, self.pattern)
        if not volumes:
            what = f"pattern {self.pattern!r}" if self.pattern else f"layout {self.layout!r}"
            problem = (
                f"no volumes matching {what} under {self.root}."
                if self.root.is_dir() else f"{self.root} does not exist."
            )
            raise dataset_not_found(self.dataset_name, problem, oasis_layout(self.root))
        return volumes

    def _settings(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "slice_band": self.slice_band,
            "slices_per_volume": self.slices_per_volume,
            "min_brain_fraction": self.min_brain_fraction,
            "intensity_percentiles": list(self.intensity_percentiles),
            "brain_level": BRAIN_LEVEL,
            "orientation": "RAS canonical, axial = last axis",
        }

    def _slices(self, volumes: list[Path]) -> tuple[Tensor, Tensor, Tensor]:
        """(images uint8 (M, 1, S, S), volume index int64 (M,), slice index int64 (M,)) of every
        volume, from the disk cache when it holds them, else extracted (and cached)."""
        path = None
        if self.disk_cache:
            files = [f for v in volumes for f in _companion_files(v) if f.exists()]
            path = cache_path(self.root, "slices", self._settings(), file_signature(files, self.root))
            cached = load_cached(path)
            if cached is not None and {"images", "volume_index", "slice_index"} <= cached.keys():
                log.info("OASIS: slices read from the cache %s", path)
                return cached["images"], cached["volume_index"], cached["slice_index"]
        images, volume_index, slice_index = [], [], []
        start = time.perf_counter()
        for v, volume_path in enumerate(volumes):
            norm = normalise_volume(load_volume(volume_path), self.intensity_percentiles, volume_path)
            chosen = select_slices(norm, self.slice_band, self.slices_per_volume, self.min_brain_fraction)
            if len(chosen) == 0:
                log.warning("OASIS: no slice of %s passes min_brain_fraction=%g", volume_path, self.min_brain_fraction)
                continue
            images.append(slices_to_images(norm, chosen, self.image_size))
            volume_index.append(np.full(len(chosen), v, dtype=np.int64))
            slice_index.append(chosen.astype(np.int64))
            if (v + 1) % 50 == 0:
                log.info("OASIS: %d / %d volumes sliced (%.0f s)", v + 1, len(volumes), time.perf_counter() - start)
        if not images:
            raise ValueError(
                f"OASIS: no slice of the {len(volumes)} volumes under {self.root} passes the selection "
                f"(slice_band={self.slice_band}, min_brain_fraction={self.min_brain_fraction}); lower min_brain_fraction"
            )
        result = (
            torch.from_numpy(np.concatenate(images)),
            torch.from_numpy(np.concatenate(volume_index)),
            torch.from_numpy(np.concatenate(slice_index)),
        )
        if path is not None:
            save_cached(path, dict(zip(("images", "volume_index", "slice_index"), result)))
        return result
