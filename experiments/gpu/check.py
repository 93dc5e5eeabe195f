"""The GPU check: does training run on a GPU as configured, and how fast? (≤ 8 min on one GPU)

Synthetic 64 px colour images (a folder of PNGs: smooth random blobs, N = --n), NeuroSQL with the
perceptual loss (model piece neurosql_gpu: ST-LPIPS alex + pixel L1) under the GPU trainer piece
(bf16-mixed, workers, FID/KID callback on 500 samples), 2 epochs. Prints images per second, the
assignment's share of the epoch and the peak GPU memory, and writes them to <out>/gpu_check.json.

    bash experiments/gpu/check.sh            # = python -m experiments.gpu.check
    python -m experiments.gpu.check --n 20000 --epochs 3 --compile
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neurosql_pl.cli import main as cli


def write_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> None:
    """n smooth random colour images (size x size PNG) under folder, unless they are there."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) >= n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        image = np.zeros((size, size, 3))
        for _ in range(3):
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3)
            image += rng.uniform(0, 1, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None]
        Image.fromarray((255 * image.clip(0, 1)).astype(np.uint8)).save(folder / f"{i:06d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="synthetic images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator (gpu.CompileGenerator)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible; this check is for a GPU machine")
    out = Path(args.out)
    began = time.perf_counter()
    write_images(out / "images", args.n)
    print(f"{args.n} synthetic images in {time.perf_counter() - began:.0f} s", flush=True)
    torch.cuda.reset_peak_memory_stats()
    extra = ["--trainer.callbacks+=neurosql_pl.gpu.CompileGenerator"] if args.compile else []
    cli(["fit", "--config", "model/neurosql_gpu", "--config", "data/folder", "--config", "trainer/gpu",
         "--data.data_dir", str(out / "images"), "--data.val_fraction", "0.05", "--data.num_workers", "4",
         "--trainer.max_epochs", str(args.epochs), "--trainer.callbacks.n", "500", "--trainer.logger", "false",
         "--trainer.default_root_dir", str(out / "run"), "--overwrite", "true", *extra])
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    epoch_s = metrics["epoch_times_s"][-1]
    n_train = int(args.n * 0.95)
    report = {
        "gpu": torch.cuda.get_device_name(), "n_train": n_train, "epochs": metrics["epochs"],
        "images_per_s": n_train / epoch_s, "epoch_s": epoch_s, "assign_s": metrics["assign_time_s"],
        "assign_share": metrics["assign_time_s"] / epoch_s if metrics["assign_time_s"] else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "val_fid": metrics["logged"].get("val/fid"), "val_kid": metrics["logged"].get("val/kid"),
        "total_s": time.perf_counter() - began,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
