"""Assignment quality: the total assigned cost Σ_i C[i, π(i)] after one assignment step, for
each block strategy (random, neighbours, multiscale; 1 and several sweeps) and the global
optimum (m = N), with the wall time of each step.

NeuroSQL (pixel MSE, fresh costs, m = --block-size, random blocks) trains on the first --subset
MNIST images; at the end of each epoch in --at-epochs, before the model's own assignment step,
every variant is run on the same state (generator, π, feature banks) and π, Ẑ are restored
after it. One CPU process; the global row is scipy's LSAP on the whole N×N cost matrix.

    python -m experiments.assignment_quality                       # N = 4096, m = 256
    python -m experiments.assignment_quality --subset 10000 --at-epochs 1 5 --sweeps 4
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import lightning as L
import torch

from experiments.runner import markdown_table, script_main, script_parser
from neurosql_pl import NeuroSQL
from neurosql_pl.assignment_callback import AssignmentCallback
from neurosql_pl.datamodules import MNISTDataModule


def variants(block_size: int, sweeps: int, n: int) -> dict[str, dict[str, Any]]:
    """Label → AssignmentCallback settings of every compared step."""
    steps = {
        f"{strategy}, {k} sweep{'s' if k > 1 else ''}": dict(block_size=block_size, strategy=strategy, sweeps=k)
        for strategy in ("random", "neighbours", "multiscale") for k in (1, sweeps)
    }
    return {**steps, "global (m = N)": dict(block_size=n)}


class CompareSteps(L.Callback):
    """At the chosen epoch ends (a trainer callback: before the model's own assignment step)
    runs every variant from the same π, Ẑ and restores them; collects one row per variant."""

    def __init__(self, at_epochs: list[int], block_size: int, sweeps: int, seed: int) -> None:
        self.at_epochs, self.block_size, self.sweeps, self.seed = at_epochs, block_size, sweeps, seed
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: NeuroSQL) -> None:
        epoch = trainer.current_epoch + 1
        if epoch not in self.at_epochs:
            return
        pi, latents = pl_module.assignment.clone(), pl_module.latents.clone()
        for label, settings in variants(self.block_size, self.sweeps, pl_module.num_codes).items():
            callback = AssignmentCallback(solver="exact", every_n_epochs=1, seed=self.seed, **settings)
            stats = callback.assign(pl_module, epoch=trainer.current_epoch)
            self.rows.append({"epoch": epoch, "variant": label, **stats})
            print(f"epoch {epoch} {label}: total {stats['total_cost']:.1f} in {stats['time_s']:.2f} s", flush=True)
            pl_module.assignment, pl_module.latents = pi.clone(), latents.clone()


def report(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per epoch, each variant's total cost, its gap to the global optimum and
    its wall time (and the multiscale π's own total, whether or not it was kept)."""
    table = []
    for epoch in sorted({r["epoch"] for r in rows}):
        here = [r for r in rows if r["epoch"] == epoch]
        best = next(r["total_cost"] for r in here if r["variant"].startswith("global"))
        table.append([epoch, "π before the step", f"{here[0]['total_cost_before']:.1f}",
                      f"{here[0]['total_cost_before'] / best - 1:+.1%}", "", ""])
        for r in here:
            multiscale = r.get("multiscale_total_cost")
            own = f"{multiscale:.1f} ({'kept' if r['multiscale_kept'] else 'not kept'})" if multiscale is not None else ""
            table.append([epoch, r["variant"], f"{r['total_cost']:.1f}", f"{r['total_cost'] / best - 1:+.1%}",
                          f"{r['time_s']:.2f}", own])
    header = ["epoch", "step", "total cost", "vs global", "time s", "multiscale π alone"]
    return markdown_table(header, table)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(args.seed)
    compare = CompareSteps(args.at_epochs, args.block_size, args.sweeps, args.seed)
    with tempfile.TemporaryDirectory() as lattice_dir:
        model = NeuroSQL(latent_dim=16, perceptual=None, pixel="l2", block_size=args.block_size, block_strategy="random",
                         init="random", cost_outputs="fresh", lattice_cache_dir=lattice_dir, seed=args.seed)
        trainer = L.Trainer(
            max_epochs=max(args.at_epochs), logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[compare], accelerator="cpu", devices=1,
        )
        trainer.fit(model, datamodule=MNISTDataModule(data_dir=args.data_dir, batch_size=128, subset=args.subset))
    print(f"\nMNIST first {args.subset} images, pixel MSE, m = {args.block_size}, seed {args.seed}\n")
    print(report(compare.rows))
    return compare.rows


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    p.add_argument("--data-dir", default="data", help="MNIST location (downloaded if missing)")
    p.add_argument("--subset", type=int, default=4096, help="N: the first N MNIST training images")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--sweeps", type=int, default=4, help="sweeps of the several-sweep variants")
    p.add_argument("--at-epochs", type=int, nargs="+", default=[1, 5], help="compare after these epochs")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
