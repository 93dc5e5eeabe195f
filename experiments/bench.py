"""Speed benchmarks of the NeuroSQL building blocks (`make bench`). Prints one report.

1. Cost matrix of a block of m real × m generated-like images: GEMM on features vs the loss
   evaluated pair by pair (one batched loss call per row of m pairs). At large m the
   pair-by-pair time is measured on `--pair-rows` rows and scaled by m / rows (it is linear
   in the number of pairs); the max relative error is over the rows measured.
2. Lattice build, N = 60,000, d = 16: POT and closed form, and the load from the disk cache.
3. The assignment step as a share of a training epoch on MNIST (all 60k by default) at
   m = 256, with an MSE cost and with an ST-LPIPS(alex) + MSE cost, for cost_outputs
   "fresh" (generator and loss-network passes at the epoch end) and "epoch" (features
   recorded during training). One epoch each; the one-off computation of the real images'
   features at fit start is reported apart. Feature banks use the default budget
   (feature_cache_gb=6 each: float16 for ST-LPIPS at 60k).
Ratios are measured side by side in one process: the machine may be shared and noisy.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import lightning as L
import torch

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL
from neurosql_pl.lattice import build_lattice, load_or_build_lattice
from neurosql_pl.losses import ReconstructionLoss


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_costs(images: torch.Tensor, sizes: list[int], pair_rows: int) -> None:
    print("\n## 1. Cost matrix of an m×m block: GEMM vs pair by pair")
    print("| loss | m | GEMM s | pair-by-pair s | speedup | max rel err |")
    print("|---|---|---|---|---|---|")
    losses = {
        "MSE": ReconstructionLoss(perceptual=None, pixel="l2"),
        "ST-LPIPS(alex)+MSE": ReconstructionLoss(perceptual="stlpips-alex", pixel="l2"),
    }
    for name, loss in losses.items():
        for m in sizes:
            x, y = images[:m], images[m : 2 * m]
            gemm_s, cost = timed(lambda: loss.cost_matrix(x, y), repeat=2)
            rows = min(m, pair_rows)

            def pairwise() -> torch.Tensor:
                with torch.no_grad():
                    return torch.stack([loss(x[i].expand_as(y), y) for i in range(rows)])

            pair_s, reference = timed(pairwise)
            pair_s *= m / rows
            rel = ((cost[:rows] - reference).abs() / reference.abs().clamp_min(1e-12)).max().item()
            print(f"| {name} | {m} | {gemm_s:.3g} | {pair_s:.3g}{'*' if rows < m else ''} | {pair_s / gemm_s:.0f}× | {rel:.1e} |")
    print(f"\n(* measured on {pair_rows} rows, scaled to m rows)")


def bench_lattice() -> None:
    print("\n## 2. Lattice build, N = 60,000, d = 16 (cube reference)")
    print("| method | build s | cache load s |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for method in ("pot", "closed_form"):
            build_s, _ = timed(lambda: build_lattice(60_000, 16, "cube", method, seed=0))
            load_or_build_lattice(60_000, 16, "cube", method, 0, Path(cache))
            load_s, _ = timed(lambda: load_or_build_lattice(60_000, 16, "cube", method, 0, Path(cache)), repeat=3)
            print(f"| {method} | {build_s:.2f} | {load_s:.3f} |")


class _EpochClock(L.Callback):
    """Wall times: train start → first epoch start (the module's feature banks are built in
    between, as callback hooks run before the module's), and the training part of the epoch
    (epoch start → before the module's assignment callback)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        self.bank_s = self.start - self.train_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_s = time.perf_counter() - self.start


def bench_assignment(data_dir: str, subset: int | None, block_size: int, lattice_dir: str, lpips: bool) -> None:
    n_label = f"{subset:,}" if subset else "60,000"
    print(f"\n## 3. Assignment step vs training epoch, MNIST {n_label} images, m = {block_size}, batch 128")
    print("| loss | cost_outputs | real-feature cache s (once) | training s | assignment s | assignment / (training + assignment) |")
    print("|---|---|---|---|---|---|")
    losses = [("MSE", None)] + ([("ST-LPIPS(alex)+MSE", "stlpips-alex")] if lpips else [])
    for name, perceptual in losses:
        for cost_outputs in ("fresh", "epoch"):
            model = NeuroSQL(
                perceptual=perceptual, pixel="l2", block_size=block_size, cost_outputs=cost_outputs,
                lattice_cache_dir=lattice_dir,
            )
            clock = _EpochClock()
            trainer = L.Trainer(
                max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[clock], accelerator="cpu", devices=1,
            )
            trainer.fit(model, datamodule=MNISTDataModule(data_dir=data_dir, batch_size=128, subset=subset))
            assign_s = float(trainer.callback_metrics["assign/time_s"])
            share = assign_s / (clock.train_s + assign_s)
            print(f"| {name} | {cost_outputs} | {clock.bank_s:.1f} | {clock.train_s:.1f} | {assign_s:.2f} | {share:.1%} |", flush=True)
            del model, trainer
            gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="MNIST location (downloaded if missing)")
    parser.add_argument("--subset", type=int, default=None, help="use the first k MNIST images for section 3 (default: all 60k)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="block sizes m of section 1")
    parser.add_argument("--pair-rows", type=int, default=16, help="rows timed pair by pair when m is larger")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--no-lpips-epoch", action="store_true", help="skip the (slow) LPIPS epochs of section 3")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)

    print(f"# neurosql_pl benchmark, {date.today().isoformat()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    data = MNISTDataModule(data_dir=args.data_dir)
    data.prepare_data()
    data.setup("fit")
    bench_costs(data.train_images()[: 2 * max(args.sizes)], args.sizes, args.pair_rows)
    bench_lattice()
    with tempfile.TemporaryDirectory() as lattice_dir:
        bench_assignment(args.data_dir, args.subset, args.block_size, lattice_dir, lpips=not args.no_lpips_epoch)


if __name__ == "__main__":
    main()
