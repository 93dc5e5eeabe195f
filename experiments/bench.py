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
4. L1 losses (pixel "l1", "laplacian_l1"), whose L1 part has no GEMM form, at MNIST size
   (N = 10,000 by default): (a) the pairwise cost of one assignment step, N/m blocks of m×m on
   the loss features ψ (D = 784 or 1,045 at 28 px), measured on one block and scaled by N/m:
   `costs.pairwise_l1` against `torch.cdist(p=1)` and against the GEMM of a squared loss of
   the same width; (b) the assignment step as a share of a training epoch at m = 256 and 2048, with
   costs fresh without feature banks (feature_cache_gb=0: every step re-renders all N lattice
   points and recomputes the real images' features), fresh with banks, and "epoch"; the
   time of the cost matrices within the step is shown apart (the rest is mostly the LSAPs).
5. The default (`NeuroSQL()`: pixel L1, multiscale blocks, PCA start, costs from the epoch's
   generated images) on the first `--default-subset` MNIST images, `--default-epochs` epochs:
   per epoch the training and assignment seconds, the assignment's share, the total assigned
   cost Σ_i C[i, π(i)] and, for the multiscale candidate, whether it was kept and the fraction
   of its blocks solved (the worse of the neighbour sweep and the multiscale candidate stops
   early, `assignment.better_candidate`). The first epoch also builds the feature banks.
6. The L1 costs by vector width: one m×m block (m = 256) of random vectors in [−1, 1] (no
   separable columns) at D = 784 (MNIST), 3,072 (colour 32 px) and 12,288 (colour 64 px), on one
   thread and on all: `costs.pairwise_l1` on the eager tiles (`NEUROSQL_FUSED_L1=0`, the path
   before 2026-12-07's compiled kernel), on the compiled kernel (`l1_kernel.fused_l1`), and
   `torch.cdist(p=1)`; per block and for the N/m blocks of one step at N = `--width-n`. The
   first call, which compiles the kernel (or loads it from inductor's disk cache), is timed apart.
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
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from unittest import mock

import lightning as L
import torch

from neurosql_pl.datamodules import MNISTDataModule
from neurosql_pl import NeuroSQL, l1_kernel
from neurosql_pl.assignment import one_thread
from neurosql_pl.costs import pairwise_l1, pairwise_sq_dists
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
    """Wall times: train start → first epoch start (the module's cost side and its feature banks
    are built in between, as callback hooks run before the module's), the training part of the
    epoch (epoch start → before the module's assignment callback), and the `block_costs` calls
    of the cost side (`costs_s`)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = time.perf_counter()
        self.costs_s = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        self.bank_s = self.start - self.train_start
        costs = pl_module.assignment_costs()
        block_costs = costs.block_costs

        def timed_block_costs(*args, **kwargs) -> torch.Tensor:
            start = time.perf_counter()
            out = block_costs(*args, **kwargs)
            self.costs_s += time.perf_counter() - start
            return out

        costs.block_costs = timed_block_costs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_s = time.perf_counter() - self.start


def epoch_times(data_dir: str, subset: int | None, lattice_dir: str, **model_args) -> dict[str, float]:
    """One NeuroSQL epoch on MNIST (batch 128) and its assignment step, in seconds: "bank" (real-
    feature cache, once), "train", "assign" and, within it, "costs" (the `block_costs` calls).
    Random blocks and a random initial π, the setting of the published figures, unless given."""
    model = NeuroSQL(lattice_cache_dir=lattice_dir, **{"block_strategy": "random", "init": "random", **model_args})
    clock = _EpochClock()
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[clock], accelerator="cpu", devices=1,
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=data_dir, batch_size=128, subset=subset))
    assign_s = float(trainer.callback_metrics["assign/time_s"])
    times = {"bank": clock.bank_s, "train": clock.train_s, "assign": assign_s, "costs": clock.costs_s}
    del model, trainer
    gc.collect()
    return times


def epoch_row(label: str, t: dict[str, float], costs: bool = False) -> str:
    cost_cell = f" {t['costs']:.2f} |" if costs else ""
    share = t["assign"] / (t["train"] + t["assign"])
    return f"| {label} | {t['bank']:.1f} | {t['train']:.1f} | {t['assign']:.2f} |{cost_cell} {share:.1%} |"


def bench_assignment(data_dir: str, subset: int | None, block_size: int, lattice_dir: str, lpips: bool) -> None:
    n_label = f"{subset:,}" if subset else "60,000"
    print(f"\n## 3. Assignment step vs training epoch, MNIST {n_label} images, m = {block_size}, batch 128")
    print("| loss | cost_outputs | real-feature cache s (once) | training s | assignment s | assignment / (training + assignment) |")
    print("|---|---|---|---|---|---|")
    losses = [("MSE", None)] + ([("ST-LPIPS(alex)+MSE", "stlpips-alex")] if lpips else [])
    for name, perceptual in losses:
        for cost_outputs in ("fresh", "epoch"):
            times = epoch_times(
                data_dir, subset, lattice_dir, perceptual=perceptual, pixel="l2", block_size=block_size,
                cost_outputs=cost_outputs,
            )
            print(epoch_row(f"{name} | {cost_outputs}", times), flush=True)


L1_LOSSES = (("pixel L1", "l1"), ("Laplacian L1", "laplacian_l1"))


def bench_l1_costs(images: torch.Tensor, num_samples: int, sizes: list[int]) -> None:
    print(f"\n## 4a. Pairwise costs of one assignment step on the L1 features ψ, N = {num_samples:,} (N/m blocks of m×m)")
    print("| loss | D | m | GEMM (squared, same D) s | torch.cdist(p=1) s | pairwise_l1 s | pairwise_l1 / GEMM | cdist / pairwise_l1 | max rel diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pixel in L1_LOSSES:
        loss = ReconstructionLoss(perceptual=None, pixel=pixel)
        for m in sizes:
            features = loss.features_batched(images[: 2 * m])
            x, y = features[:m], features[m:]
            blocks = num_samples / m
            gemm_s = cdist_s = l1_s = float("inf")
            for _ in range(3):  # interleaved, best of 3: the machine may be shared
                gemm_s = min(gemm_s, timed(lambda: pairwise_sq_dists(x, y))[0])
                seconds, reference = timed(lambda: torch.cdist(x, y, p=1.0))
                cdist_s = min(cdist_s, seconds)
                seconds, cost = timed(lambda: pairwise_l1(x, y))
                l1_s = min(l1_s, seconds)
            rel = ((cost - reference).abs() / reference.abs().clamp_min(1e-12)).max().item()
            print(f"| {name} | {x.shape[1]} | {m} | {gemm_s * blocks:.3g} | {cdist_s * blocks:.3g} | {l1_s * blocks:.3g} | "
                  f"{l1_s / gemm_s:.0f}× | {cdist_s / l1_s:.1f}× | {rel:.1e} |", flush=True)


def bench_l1_assignment(data_dir: str, subset: int, block_size: int, lattice_dir: str) -> None:
    print(f"\n## 4b. Assignment step vs training epoch with an L1 loss, MNIST {subset:,} images, m = {block_size}, batch 128")
    print("| loss | cost source | real-feature cache s (once) | training s | assignment s | of which costs s | assignment / (training + assignment) |")
    print("|---|---|---|---|---|---|---|")
    sources = (
        ("fresh, no banks", {"cost_outputs": "fresh", "feature_cache_gb": 0.0}),
        ("fresh", {"cost_outputs": "fresh"}),
        ("epoch", {"cost_outputs": "epoch"}),
    )
    for name, pixel in L1_LOSSES:
        for label, args in sources:
            times = epoch_times(data_dir, subset, lattice_dir, perceptual=None, pixel=pixel, block_size=block_size, **args)
            print(epoch_row(f"{name} | {label}", times, costs=True), flush=True)


class _AssignLog(L.Callback):
    """Per epoch: training seconds (epoch start → before the assignment callback, which runs
    last) and the assignment callback's logged statistics (read at the next epoch's start)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._collect(trainer)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rows.append({"train": time.perf_counter() - self.start})

    def on_train_end(self, trainer, pl_module) -> None:
        self._collect(trainer)

    def _collect(self, trainer) -> None:
        if self.rows and "assign" not in self.rows[-1]:
            logged = {k.removeprefix("assign/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("assign/")}
            self.rows[-1].update(assign=logged["time_s"], **logged)


def bench_default(data_dir: str, subset: int, epochs: int, lattice_dir: str) -> None:
    print(f"\n## 5. The default NeuroSQL(), MNIST {subset:,} images, batch 128, {epochs} epochs")
    print("| epoch | training s | assignment s | assignment / (training + assignment) | total cost | multiscale kept | multiscale blocks solved | sweep blocks solved |")
    print("|---|---|---|---|---|---|---|---|")
    log = _AssignLog()
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[log], accelerator="cpu", devices=1,
    )
    trainer.fit(NeuroSQL(lattice_cache_dir=lattice_dir), datamodule=MNISTDataModule(data_dir=data_dir, batch_size=128, subset=subset))
    for epoch, row in enumerate(log.rows):
        share = row["assign"] / (row["train"] + row["assign"])
        print(f"| {epoch} | {row['train']:.1f} | {row['assign']:.2f} | {share:.1%} | {row['total_cost']:.6g} | "
              f"{row.get('multiscale_kept', float('nan')):.0f} | {row.get('multiscale_solved', 1.0):.0%} | "
              f"{row.get('sweep_solved', 1.0):.0%} |", flush=True)
    steady = log.rows[1:] or log.rows
    share = sum(r["assign"] for r in steady) / sum(r["train"] + r["assign"] for r in steady)
    print(f"\nassignment share over epochs {1 if len(log.rows) > 1 else 0}–{len(log.rows) - 1}: {share:.1%}")


L1_WIDTHS = (("MNIST 28 px", 784), ("colour 32 px", 3 * 32 * 32), ("colour 64 px", 3 * 64 * 64))


def bench_l1_width(num_samples: int, block_size: int = 256) -> None:
    print(f"\n## 6. L1 costs by vector width: one {block_size}×{block_size} block, and the {num_samples / block_size:.0f} "
          f"blocks of a step at N = {num_samples:,}")
    generator = torch.Generator().manual_seed(0)
    first = (torch.rand(2, block_size, 784, generator=generator) * 2 - 1).unbind(0)
    compile_s, _ = timed(lambda: pairwise_l1(*first))
    print(f"first call of the compiled kernel (compiles, or loads inductor's disk cache): {compile_s:.1f} s; "
          f"kernel available: {l1_kernel.fused_l1_available()}")
    print("| images | D | threads | eager tiles s/block | compiled kernel s/block | torch.cdist s/block | tiles / kernel | "
          "step s (kernel) | max rel diff (kernel vs float64) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dim in L1_WIDTHS:
        x, y = (torch.rand(2, block_size, dim, generator=generator) * 2 - 1).unbind(0)
        reference = pairwise_l1(x.double(), y.double())
        for threads in sorted({1, torch.get_num_threads()}):
            tiles_s = kernel_s = cdist_s = float("inf")
            with one_thread() if threads == 1 else nullcontext():
                for _ in range(3):  # interleaved, best of 3: the machine may be shared
                    with mock.patch.dict(os.environ, {l1_kernel.ENV_SWITCH: "0"}):  # the eager tiles
                        tiles_s = min(tiles_s, timed(lambda: pairwise_l1(x, y))[0])
                    seconds, cost = timed(lambda: pairwise_l1(x, y))
                    kernel_s = min(kernel_s, seconds)
                    cdist_s = min(cdist_s, timed(lambda: torch.cdist(x, y, p=1.0))[0])
            rel = ((cost.double() - reference).abs() / reference).max().item()
            print(f"| {name} | {dim:,} | {threads} | {tiles_s:.3g} | {kernel_s:.3g} | {cdist_s:.3g} | "
                  f"{tiles_s / kernel_s:.2f}× | {kernel_s * num_samples / block_size:.3g} | {rel:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="MNIST location (downloaded if missing)")
    parser.add_argument("--subset", type=int, default=None, help="use the first k MNIST images for section 3 (default: all 60k)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="block sizes m of section 1")
    parser.add_argument("--pair-rows", type=int, default=16, help="rows timed pair by pair when m is larger")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--no-lpips-epoch", action="store_true", help="skip the (slow) LPIPS epochs of section 3")
    parser.add_argument("--l1-subset", type=int, default=10_000, help="N of section 4 (first N MNIST images)")
    parser.add_argument("--l1-sizes", type=int, nargs="+", default=[256, 2048], help="block sizes m of section 4a")
    parser.add_argument("--l1-block-sizes", type=int, nargs="+", default=[256, 2048], help="block sizes m of section 4b")
    parser.add_argument("--default-subset", type=int, default=10_000, help="N of section 5 (first N MNIST images)")
    parser.add_argument("--default-epochs", type=int, default=4, help="epochs of section 5")
    parser.add_argument("--width-n", type=int, default=10_000, help="N of section 6 (step seconds = N/256 blocks)")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="which sections to run")
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
    images = data.train_images()[: 2 * max(args.sizes + args.l1_sizes)]
    if 1 in args.sections:
        bench_costs(images, args.sizes, args.pair_rows)
    if 2 in args.sections:
        bench_lattice()
    with tempfile.TemporaryDirectory() as lattice_dir:
        if 3 in args.sections:
            bench_assignment(args.data_dir, args.subset, args.block_size, lattice_dir, lpips=not args.no_lpips_epoch)
        if 4 in args.sections:
            bench_l1_costs(images, args.l1_subset, args.l1_sizes)
            for block_size in args.l1_block_sizes:
                bench_l1_assignment(args.data_dir, args.l1_subset, block_size, lattice_dir)
        if 5 in args.sections:
            bench_default(args.data_dir, args.default_subset, args.default_epochs, lattice_dir)
    if 6 in args.sections:
        bench_l1_width(args.width_n)


if __name__ == "__main__":
    main()
