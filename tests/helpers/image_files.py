"""Test helpers: tiny datasets in the real on-disk layouts, written into a folder (no network).

    from tests.helpers.image_files import write_celeba, write_afhq, write_oasis, write_nifti_folder, write_image_folder
    data_dir = write_celeba(tmp_path, n=30)           # → CelebADataModule(data_dir=str(data_dir))
    data_dir = write_afhq(tmp_path, n_per_class=4)    # → AFHQDataModule(data_dir=...)
    data_dir = write_oasis(tmp_path, n_subjects=4)    # → OASISDataModule(data_dir=...), Analyze .hdr/.img
    data_dir = write_nifti_folder(tmp_path, n=4)      # → OASISDataModule(data_dir=...), *.nii.gz
    folder = write_image_folder(tmp_path, n=12)       # → ImageFolderDataModule(data_dir=...)

Every writer returns the `data_dir` to pass to its datamodule (with the datamodule's defaults:
`download=False` is still wise in tests, so that nothing is ever fetched). Images are smooth,
distinct per index (`picture`: a coloured disc whose position and colour depend on the index, on
a gradient), so shuffled or mismatched indices show; the 2-D writers take another `draw`, e.g.
tests/helpers/id_images.py's `id_picture`, whose id can be read back from the served image.
Volumes are an ellipsoidal "brain" with internal structure on a zero (masked) or noisy
(unmasked) background.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

AFHQ_CLASSES = ("cat", "dog", "wild")
CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba
OASIS_SHAPE = (20, 24, 20)  # small stand-in for T88_111's 176 × 208 × 176

#: draws image k: (k, width, height, seed) → uint8 (height, width, 3); `picture` by default
Draw = Callable[[int, int, int, int], np.ndarray]


# ----------------------------------------------------------------------------- 2-D images


def picture(i: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3): a gradient background and a disc, both depending on `i`."""
    rng = np.random.default_rng(seed * 1_000_003 + i)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    colour = rng.uniform(40, 255, size=3)
    cy, cx = height * rng.uniform(0.3, 0.7), width * rng.uniform(0.3, 0.7)
    radius = min(width, height) * rng.uniform(0.15, 0.3)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)[..., None]
    background = np.stack([xx / width * 200, yy / height * 200, np.full_like(xx, 30.0 * (i % 7))], axis=-1)
    image = np.where(disc, colour, background) + rng.normal(0, 4, size=(height, width, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def save_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    """Write `pixels` (H, W, 3) uint8 to `path` in the format of its extension (JPEG quality 90)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    kwargs = {"quality": 90} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    image.save(path, **kwargs)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut `path` to the first `keep` share of its bytes (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def celeba_partition(n: int) -> list[int]:
    """Split code (0 train, 1 valid, 2 test) of images 1..n: interleaved 0, 0, 0, 1, 2, ..."""
    return [(0, 0, 0, 1, 2)[k % 5] for k in range(n)]


def write_celeba(
    root: Path, n: int = 30, partition: Sequence[int] | None = None, seed: int = 0, draw: Draw = picture
) -> Path:
    """`root/celeba/img_align_celeba/000001.jpg …` (178 × 218 JPEGs; file k + 1 shows image k
    of `draw`) and `root/celeba/list_eval_partition.txt` ("000001.jpg 0" lines; `partition` or
    `celeba_partition(n)`). Returns root, the data_dir."""
    partition = list(partition) if partition is not None else celeba_partition(n)
    assert len(partition) == n
    celeba = Path(root) / "celeba"
    lines = []
    for k in range(n):
        name = f"{k + 1:06d}.jpg"
        save_image(celeba / "img_align_celeba" / name, draw(k, *CELEBA_SIZE, seed))
        lines.append(f"{name} {partition[k]}\n")
    (celeba / "list_eval_partition.txt").write_text("".join(lines))
    return Path(root)


def write_afhq(
    root: Path,
    n_per_class: int = 4,
    n_val_per_class: int = 2,
    classes: Sequence[str] = AFHQ_CLASSES,
    size: int = 64,
    seed: int = 0,
    draw: Draw = picture,
) -> Path:
    """`root/afhq/{train,val}/{cat,dog,wild}/flickr_<class>_<j>.jpg` (size × size JPEGs; the real
    ones are 512 px). They show images k = 0, 1, … of `draw` in the order train, val; cat, dog,
    wild; j. Returns root, the data_dir."""
    k = 0
    for split, count in (("train", n_per_class), ("val", n_val_per_class)):
        for c in classes:
            for j in range(count):
                save_image(Path(root) / "afhq" / split / c / f"flickr_{c}_{j:06d}.jpg", draw(k, size, size, seed))
                k += 1
    return Path(root)


def image_folder_paths(n: int) -> list[str]:
    """Relative path of image k in `write_image_folder`: assorted formats (.png, .jpg, .bmp,
    .JPG) and nesting depths (0–2 subfolders), so that path order is not k order."""
    subdirs = ("", "a/", "a/deep/", "b/")
    exts = (".png", ".jpg", ".bmp", ".JPG")
    return [f"{subdirs[k % 4]}img_{k:03d}{exts[k % 4]}" for k in range(n)]


def write_image_folder(root: Path, n: int = 12, seed: int = 0, name: str = "images", draw: Draw = picture) -> Path:
    """`root/<name>/` with n images of assorted sizes (square and not) at `image_folder_paths(n)`,
    image k drawn by `draw`. Returns that folder, the data_dir."""
    folder = Path(root) / name
    for k, relative in enumerate(image_folder_paths(n)):
        width, height = (40 + 7 * (k % 3), 30 + 11 * (k % 4))
        save_image(folder / relative, draw(k, width, height, seed))
    return folder


# ----------------------------------------------------------------------------- volumes


def brain_volume(shape: Sequence[int] = OASIS_SHAPE, seed: int = 0, scale: float = 1.0, noise: float = 0.0) -> np.ndarray:
    """float32 volume (X, Y, Z): an ellipsoid "brain" (radii 40 % of each side) with smooth
    seed-dependent structure, intensities ~ scale · [200, 1000]; background 0 plus |N(0, noise)|."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum((g / 0.8) ** 2 for g in grids) <= 1.0
    phase = rng.uniform(0, 2 * np.pi, size=3)
    structure = 600 + 300 * np.sin(3 * grids[0] + phase[0]) * np.cos(4 * grids[1] + phase[1]) + 100 * np.sin(5 * grids[2] + phase[2])
    volume = np.where(inside, structure, 0.0) * scale
    if noise:
        volume = volume + np.abs(rng.normal(0, noise, size=shape))
    return volume.astype(np.float32)


def oasis_name(subject: int, session: int = 1) -> str:
    """OASIS-1 session id, e.g. OAS1_0001_MR1."""
    return f"OAS1_{subject:04d}_MR{session}"


def oasis_t88_path(root: Path, subject: int, session: int = 1, ext: str = ".hdr", disc: int = 1) -> Path:
    """Where OASIS-1 keeps a session's T88_111 masked image (Analyze .hdr, its .img beside it)."""
    session_id = oasis_name(subject, session)
    folder = Path(root) / "oasis" / f"disc{disc}" / session_id / "PROCESSED" / "MPRAGE" / "T88_111"
    return folder / f"{session_id}_mpr_n4_anon_111_t88_masked_gfc{ext}"


def analyze_affine(shape: Sequence[int]) -> np.ndarray:
    """The voxel-to-world affine nibabel assumes for an Analyze 7.5 file of this shape (1 mm
    voxels, x flipped: LAS), which Analyze itself cannot store."""
    header = nib.AnalyzeHeader()
    header.set_data_shape(tuple(shape))
    return header.get_best_affine()


def save_volume(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a volume: Analyze 7.5 (int16, as OASIS) for `.hdr`, NIfTI-1 for `.nii` / `.nii.gz`
    (with `affine`, identity = RAS by default; Analyze files cannot store one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    if path.suffix == ".hdr":
        nib.save(nib.AnalyzeImage(np.rint(volume).astype(np.int16), affine), path)
    else:
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), path)
    return path


def write_oasis(
    root: Path,
    n_subjects: int = 4,
    analyze: bool = True,
    rescans: int = 1,
    shape: Sequence[int] = OASIS_SHAPE,
    decoys: bool = True,
    seed: int = 0,
) -> Path:
    """OASIS-1 cross-sectional layout under `root/oasis/disc1/`: subjects OAS1_0001… with session
    MR1 (the first `rescans` subjects also MR2), each a T88_111 masked image (Analyze .hdr/.img,
    or .nii.gz when not `analyze`) with the real file naming; subject s's intensities are scaled
    by (1 + s). With `decoys`, files the datamodule must ignore sit beside them: the unmasked
    `_t88_gfc` image, the SUBJ_111 image and a RAW scan. Returns root, the data_dir."""
    ext = ".hdr" if analyze else ".nii.gz"
    affine = analyze_affine(shape)  # NIfTI copies say explicitly what Analyze leaves implicit
    for s in range(1, n_subjects + 1):
        for session in (1, 2) if s <= rescans else (1,):
            volume = brain_volume(shape, seed=seed + 100 * s + session, scale=1.0 + s)
            path = save_volume(oasis_t88_path(root, s, session, ext), volume, affine)
            if decoys and session == 1:
                sid = oasis_name(s, session)
                save_volume(path.with_name(f"{sid}_mpr_n4_anon_111_t88_gfc{ext}"), volume + 50, affine)
                save_volume(path.parents[1] / "SUBJ_111" / f"{sid}_mpr_n4_anon_sbj_111{ext}", volume, affine)
                save_volume(path.parents[3] / "RAW" / f"{sid}_mpr-1_anon{ext}", volume, affine)
    return Path(root)


def write_nifti_folder(
    root: Path, n: int = 4, shape: Sequence[int] = OASIS_SHAPE, subdir: str = "oasis", seed: int = 0
) -> Path:
    """n NIfTI volumes in BIDS-like nesting, `root/<subdir>/sub-XX/anat/sub-XX_T1w.nii.gz`, with a
    noisy (unmasked) background; every other one stored flipped (LPS affine). Returns root."""
    for k in range(1, n + 1):
        volume = brain_volume(shape, seed=seed + k, scale=0.5 * k, noise=5.0)
        affine = np.eye(4)
        if k % 2 == 0:  # same anatomy, stored with x and y reversed
            volume = volume[::-1, ::-1, :]
            affine = np.diag([-1.0, -1.0, 1.0, 1.0])
            affine[:2, 3] = [shape[0] - 1, shape[1] - 1]
        save_volume(Path(root) / subdir / f"sub-{k:02d}" / "anat" / f"sub-{k:02d}_T1w.nii.gz", volume, affine)
    return Path(root)
