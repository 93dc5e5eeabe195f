"""Images out of a checkpoint, with no code: ``neurosql sample`` (also ``make sample``).

    neurosql sample --ckpt runs/mnist/checkpoints/last.ckpt --n 1000 [--out DIR] [--seed 0]
        [--truncation 2.0] [--batch_size 256] [--device auto]

Writes, under --out (default ``<run folder>/samples_n<N>_seed<S>/``; an existing non-empty folder
is refused, so earlier samples are never overwritten):
  images/000000.png …   the N samples, one PNG each (grey or RGB, the training images' size)
  grid.png              the first 64 in an 8 x 8 grid
  samples.npz           ``arr_0``: the N samples as uint8 (N, H, W, C) in [0, 255], the layout that
                        outside FID tools read (e.g. the guided-diffusion evaluator); ``seed``,
                        ``truncation`` (NaN: none)
  sample.json           what made them: checkpoint, class, N, seed, truncation, EMA, seconds

The samples come from ``model.sample`` with one seeded CPU generator (the same draws as
``evaluate --seed S`` makes), so a seed reproduces them. Every model (NeuroSQL, VAE, GAN, DDPM) samples with
the EMA of its trained network's weights when the run kept one (``ema_decay`` > 0), and
sample.json says so (``GenerativeModel.uses_ema``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .evaluate import draw_samples
from .files import write_json_atomic
from .generative_model import GenerativeModel
from .images import image_grid, to_uint8
from .prior import check_truncation
from .run_folder import EvaluationError, load_model, read_checkpoint, read_run_config, resolve_device, run_dir_of

__all__ = ["sample_to_folder", "main"]

GRID_IMAGES = 64


def default_out(ckpt: str | os.PathLike[str], n: int, seed: int, truncation: float | None) -> Path:
    """``<run folder>/samples_n<N>_seed<S>[_truncation<t>]``."""
    name = f"samples_n{n}_seed{seed}" + ("" if truncation is None else f"_truncation{truncation:g}")
    return run_dir_of(ckpt) / name


def uses_ema(model: Any) -> bool | None:
    """Whether ``model.sample`` draws with an EMA of the trained network's weights, as the model
    says (``GenerativeModel.uses_ema``); None for a model of another kind, which does not say."""
    return model.uses_ema if isinstance(model, GenerativeModel) else None


def sample_to_folder(
    ckpt: str | os.PathLike[str],
    n: int = 1000,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    truncation: float | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> dict[str, Any]:
    """Draw n samples of the checkpoint's model and write them under ``out`` (see the module doc).

    Args:
        ckpt: a Lightning checkpoint of NeuroSQL, the VAE, the GAN or the DDPM.
        n: number of samples, ≥ 1.
        out: the folder to write (must not exist or be empty); default <run folder>/samples_n<N>_seed<S>.
        seed: seeds the one CPU generator the codes are drawn with.
        truncation: draw codes from N(0, I) truncated to |z_j| ≤ truncation (not the DDPM); null: the plain prior.
        batch_size: samples per generator pass.
        device: auto (cuda if available), cpu or cuda.
    Returns the sample.json record, with ``out`` the folder written.
    """
    if n < 1:
        raise EvaluationError(f"n must be at least 1, got {n}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    try:
        check_truncation(truncation)
    except ValueError as err:
        raise EvaluationError(str(err)) from err
    folder = Path(out) if out is not None else default_out(ckpt, n, seed, truncation)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EvaluationError(f"{folder} already exists and is not empty; nothing was written. Choose another "
                              "--out, another --seed, or remove it")
    checkpoint, weights_only = read_checkpoint(ckpt)
    model, class_path = load_model(ckpt, read_run_config(run_dir_of(ckpt)), checkpoint, weights_only)
    del checkpoint
    dev = resolve_device(device)
    model = model.to(dev)
    began = time.perf_counter()
    images = to_uint8(draw_samples(model, n, seed, batch_size, truncation))  # (n, C, H, W) uint8
    seconds = time.perf_counter() - began
    write_folder(folder, images, seed, truncation)
    record = {"ckpt": str(ckpt), "class_path": class_path, "n": n, "seed": seed, "truncation": truncation,
              "ema": uses_ema(model), "shape": list(images.shape[1:]), "sample_s": seconds, "device": str(dev)}
    write_json_atomic(record, folder / "sample.json")
    return {**record, "out": str(folder)}


def write_folder(folder: Path, images: torch.Tensor, seed: int, truncation: float | None) -> None:
    """images (n, C, H, W) uint8 → images/*.png, grid.png and samples.npz under folder."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    for i, image in enumerate(nhwc):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / "images" / f"{i:06d}.png")
    grid = image_grid(images[:GRID_IMAGES].float() / 127.5 - 1)
    Image.fromarray(grid).save(folder / "grid.png")
    np.savez(folder / "samples.npz", arr_0=nhwc, seed=np.int64(seed),
             truncation=np.float64(np.nan if truncation is None else truncation))


def build_parser():
    """The command's parser: one option per parameter of ``sample_to_folder`` (commands.py)."""
    from .commands import function_parser

    return function_parser(sample_to_folder, "neurosql sample", __doc__.split("\n\n")[0])


def command(argv: Sequence[str]) -> int:
    """``neurosql sample …``: write the folder and say where (status 0). An EvaluationError
    propagates: `neurosql` prints it as one 'error: …' line (status 1)."""
    from .commands import parse_command_line

    record = sample_to_folder(**parse_command_line(build_parser(), argv))
    ema = " with the EMA weights" if record["ema"] else ""
    print(f"wrote {record['n']} samples of {record['class_path']}{ema} (seed {record['seed']}) to {record['out']}: "
          f"images/*.png, grid.png, samples.npz ({record['sample_s']:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m neurosql_pl.sampling …``, the same as ``neurosql sample …``: the exit status."""
    from .commands import run_command

    return run_command(command, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
