"""Which settings make NeuroSQL's images good: each quality lever alone against the former default,
at the same wall-clock budget, with the VAE and the GAN trained the same way as reference lines.

Every configuration trains on the same images (default: the first 10,000 MNIST training images)
for the same wall time (--minutes, Lightning's ``trainer.max_time``). A snapshot checkpoint is
written every --every-minutes of training; each snapshot and the final model are scored by
``neurosql_pl.evaluate`` (FID and KID from --n samples against held-out images), so every
configuration gives a curve of FID against training seconds.

Writes, under --out (default runs/ablate/<data>):
  <config>/seed<s>/   the run folders (config.yaml, metrics.json, checkpoints/, snapshots.json,
                      eval_<snapshot>.json); a finished, scored run is reused on a rerun
  <table>.csv         one row per (config, seed, point): training seconds, epochs, every metric
  <table>.md          the table at the end of the budget (mean over seeds), best FID first
  <table>.png         FID against training seconds, one line per configuration (mean over seeds)
                      (<table>: --table, default "ablate")

    python -m experiments.ablate                                  # every lever, 1 seed (≈ 85 min)
    python -m experiments.ablate --configs base l1 ema --seeds 0 1
    python -m experiments.ablate --configs lr --table lr_sweep    # learning-rate sweep of every model
    python -m experiments.ablate --list                           # the configurations and their flags
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L

from experiments.runner import (
    ExperimentError, add_data_args, add_scoring_args, check_can_train, fit, markdown_table, max_time_flags, mean_of,
    run_state, script_main, script_parser, write_csv,
)
from neurosql_pl.evaluate import evaluate
from neurosql_pl.files import write_json_atomic
from neurosql_pl.run_folder import EVAL_FILE, last_checkpoint, train_metrics

#: slug → (what it changes, model config piece, extra CLI flags). "base" is the former default
#: (neurosql_mse), "default" today's (neurosql: NeuroSQL()'s defaults).
CONFIGS: dict[str, tuple[str, str, list[str]]] = {
    "base": ("former default (neurosql_mse): MSE, m = 256, random init, d = 16", "neurosql_mse", []),
    "m2048": ("block size m = 2048", "neurosql_mse", ["--model.block_size", "2048"]),
    "sweeps3": ("3 block sweeps per assignment step", "neurosql_mse", ["--model.assign_sweeps", "3"]),
    "neighbours": ("blocks of alike images, 3 sweeps", "neurosql_mse",
                   ["--model.block_strategy", "neighbours", "--model.assign_sweeps", "3"]),
    "multiscale": ("multi-scale assignment (images and lattice bisected together)", "neurosql_mse",
                   ["--model.block_strategy", "multiscale"]),
    "pca": ("OT-PCA initial π", "neurosql_mse", ["--model.init", "pca"]),
    "l1": ("pixel L1 loss", "neurosql_mse", ["--model.pixel", "l1"]),
    "lap_l1": ("Laplacian-pyramid L1 loss", "neurosql_mse", ["--model.pixel", "laplacian_l1"]),
    "stlpips": ("ST-LPIPS(alex) + MSE loss", "neurosql_lpips", ["--model.cost_outputs", "epoch"]),
    "ema": ("EMA of the generator weights (0.999) for sampling", "neurosql_mse", ["--model.ema_decay", "0.999"]),
    "resize": ("resize + conv upsampling", "neurosql_mse", ["--model.upsample", "resize"]),
    "d8": ("latent dimension d = 8", "neurosql_mse", ["--model.latent_dim", "8"]),
    "d32": ("latent dimension d = 32", "neurosql_mse", ["--model.latent_dim", "32"]),
    "ball": ("lattice from the unit-ball reference grid", "neurosql_mse", ["--model.lattice_reference", "ball"]),
    "vae": ("VAE, same decoder, tuned lr 0.003 (reference)", "vae", []),
    "gan": ("GAN, same generator, tuned lr 0.001 (reference)", "gan", []),
    "default": ("the levers that won, together: neurosql.yaml, make train's default", "neurosql", []),
    # learning-rate sweeps: the same tuning effort for every model (not in the default run)
    "default_lr1e-3": ("neurosql.yaml, lr 0.001", "neurosql", ["--model.lr", "0.001"]),
    "default_lr4e-3": ("neurosql.yaml, lr 0.004", "neurosql", ["--model.lr", "0.004"]),
    "vae_lr3e-4": ("VAE, lr 0.0003", "vae", ["--model.lr", "0.0003"]),
    "vae_lr1e-3": ("VAE, lr 0.001", "vae", ["--model.lr", "0.001"]),
    "vae_lr1e-2": ("VAE, lr 0.01", "vae", ["--model.lr", "0.01"]),
    "gan_lr1e-4": ("GAN, lr_g = lr_d = 0.0001", "gan", ["--model.lr_g", "0.0001", "--model.lr_d", "0.0001"]),
    "gan_lr5e-4": ("GAN, lr_g = lr_d = 0.0005", "gan", ["--model.lr_g", "0.0005", "--model.lr_d", "0.0005"]),
    "gan_lr2e-4": ("GAN, lr_g = lr_d = 0.0002", "gan", ["--model.lr_g", "0.0002", "--model.lr_d", "0.0002"]),
}
#: what `make ablate` runs: every lever alone, the references and their combination (≈ 85 min on 2 cores)
DEFAULT_CONFIGS: list[str] = [slug for slug in CONFIGS if "_lr" not in slug]
#: named groups accepted by --configs
GROUPS: dict[str, list[str]] = {
    "levers": DEFAULT_CONFIGS,
    "lr": ["base", "default", "default_lr1e-3", "default_lr4e-3", "vae", "vae_lr3e-4", "vae_lr1e-3", "vae_lr1e-2",
           "gan", "gan_lr1e-4", "gan_lr2e-4", "gan_lr5e-4"],
}

#: (column, eval.json metric key) of the table; KID is shown ×10³
COLUMNS: list[tuple[str, str]] = [
    ("FID ↓", "fid"), ("KID×10³ ↓", "kid_mean"), ("precision ↑", "precision"), ("recall ↑", "recall"),
    ("recon MSE ↓", "recon_mse"), ("pixel syn→train", "pixel_syn_to_train"),
]
SNAPSHOTS_FILE = "snapshots.json"


class TimedSnapshots(L.Callback):
    """Saves ``checkpoints/snap<k>.ckpt`` at the first epoch end after every ``every_s`` seconds of
    training, and lists them with their training seconds in ``<run>/snapshots.json``.

    Training seconds count from the start of training and leave out the time spent saving."""

    def __init__(self, every_s: float = 90.0) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.every_s = every_s
        self._start, self._saving, self._taken = 0.0, 0.0, []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._saving, self._taken = time.perf_counter(), 0.0, []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = time.perf_counter() - self._start - self._saving
        if elapsed < self.every_s * (len(self._taken) + 1):
            return
        began = time.perf_counter()
        run_dir = Path(trainer.default_root_dir)
        name = f"snap{len(self._taken) + 1}"
        trainer.save_checkpoint(run_dir / "checkpoints" / f"{name}.ckpt")
        self._taken.append({"name": name, "train_s": elapsed, "epochs": trainer.current_epoch + 1})
        if trainer.is_global_zero:
            write_json_atomic({"snapshots": self._taken}, run_dir / SNAPSHOTS_FILE)
        self._saving += time.perf_counter() - began


def expand_configs(names: list[str]) -> list[str]:
    """Configuration slugs of ``names`` (slugs or GROUPS names), in order, each once."""
    slugs = list(dict.fromkeys(slug for name in names for slug in GROUPS.get(name, [name])))
    unknown = [c for c in slugs if c not in CONFIGS]
    if unknown:
        raise ExperimentError(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)} "
                              f"or a group: {', '.join(GROUPS)}")
    return slugs


def points_of(run_dir: Path) -> list[dict[str, Any]]:
    """The run's scored points: its snapshots, then the end of training (``last.ckpt``). A snapshot
    of the last epoch is the final model again and is left out."""
    snapshots = json.loads((run_dir / SNAPSHOTS_FILE).read_text())["snapshots"] if (run_dir / SNAPSHOTS_FILE).is_file() else []
    summary = train_metrics(run_dir)
    points = [{**s, "ckpt": run_dir / "checkpoints" / f"{s['name']}.ckpt", "eval": run_dir / f"eval_{s['name']}.json"}
              for s in snapshots if s["epochs"] < summary["epochs"]]
    points.append({"name": "end", "train_s": summary["total_time_s"], "epochs": summary["epochs"],
                   "ckpt": last_checkpoint(run_dir), "eval": run_dir / EVAL_FILE})
    return points


def train(slug: str, seed: int, args: argparse.Namespace, run_dir: Path) -> None:
    _, config, flags = CONFIGS[slug]
    fit(config, run_dir, args.data, args.data_dir, [
        *flags, "--data.subset", str(args.subset),
        "--seed_everything", str(seed),
        "--trainer.max_epochs", str(args.max_epochs), *max_time_flags(args.minutes),
        "--trainer.callbacks+=experiments.ablate.TimedSnapshots", "--trainer.callbacks.every_s", str(60 * args.every_minutes),
        *args.cli_args,
    ])


def scored(point: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """eval.json of one point: reused when made with the same n, features and seed, else computed."""
    if point["eval"].is_file():
        report = json.loads(point["eval"].read_text())
        s = report.get("settings", {})
        if (s.get("n_samples"), s.get("features"), s.get("seed")) == (args.n, args.features, args.seed):
            return report
    return evaluate(point["ckpt"], n=args.n, out=point["eval"], data_dir=args.data_dir, features=args.features,
                    fid_method=args.fid_method, seed=args.seed, log=None)


def run_config(slug: str, seed: int, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Train (unless finished) and score one (configuration, seed): one row per point."""
    run_dir = out / slug / f"seed{seed}"
    if args.force or run_state(run_dir) not in ("trained", "evaluated"):
        print(f"[{slug} seed {seed}] training {args.minutes:g} min into {run_dir}", flush=True)
        train(slug, seed, args, run_dir)
    rows = []
    for point in points_of(run_dir):
        began = time.perf_counter()
        m = scored(point, args)["metrics"]
        print(f"[{slug} seed {seed}] {point['name']}: {point['train_s']:.0f} s, {point['epochs']} epochs, "
              f"FID {m['fid']:.1f} ({time.perf_counter() - began:.0f} s to score)", flush=True)
        rows.append({"config": slug, "seed": seed, "point": point["name"], "train_s": point["train_s"],
                     "epochs": point["epochs"], **{key: m[key] for _, key in COLUMNS},
                     "baseline_fid": m["baseline_fid"], "baseline_kid_mean": m["baseline_kid_mean"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The end-of-budget row of each configuration, mean over seeds, best FID first; real data last."""
    ends = [r for r in rows if r["point"] == "end"]
    lines = []
    for slug in dict.fromkeys(r["config"] for r in ends):
        mine = [r for r in ends if r["config"] == slug]
        fids = [r["fid"] for r in mine]
        cells = [slug, CONFIGS[slug][0], len(mine), mean_of(mine, "epochs"), mean_of(mine, "train_s")]
        cells += [mean_of(mine, key) * (1e3 if key == "kid_mean" else 1) if mean_of(mine, key) is not None else None
                  for _, key in COLUMNS]
        cells.append(f"{min(fids):.1f}–{max(fids):.1f}" if len(fids) > 1 else None)
        lines.append(cells)
    lines.sort(key=lambda c: c[5] if c[5] is not None else float("inf"))
    real = ["real data", "training vs held-out images", None, None, None, mean_of(ends, "baseline_fid"),
            (mean_of(ends, "baseline_kid_mean") or 0) * 1e3, None, None, None, None, None]
    header = ["config", "what", "seeds", "epochs", "train s", *[c for c, _ in COLUMNS], "FID range"]
    return markdown_table(header, [*lines, real])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """FID against training seconds, one line per configuration (mean over seeds at each point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors
    for i, slug in enumerate(dict.fromkeys(r["config"] for r in rows)):
        mine = [r for r in rows if r["config"] == slug and r["fid"] is not None]
        points = list(dict.fromkeys(r["point"] for r in mine))
        xs = [mean_of([r for r in mine if r["point"] == p], "train_s") for p in points]
        ys = [mean_of([r for r in mine if r["point"] == p], "fid") for p in points]
        style = "--" if slug.startswith(("vae", "gan")) else "-"
        colour = {"base": "black", "default": "red"}.get(slug, colours[i % len(colours)])
        ax.plot(xs, ys, style, color=colour, marker="os^vD<>p"[i % 8], label=slug,
                linewidth=2.5 if slug in ("base", "default") else 1.5)
    ax.set_xlabel("training seconds (2-core CPU)")
    ax.set_ylabel("FID ↓")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.list:
        for slug, (what, config, flags) in CONFIGS.items():
            print(f"{slug:11s} {what}: {config} {' '.join(flags)}")
        return []
    args.configs = expand_configs(args.configs)
    out = Path(args.out or f"runs/ablate/{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    for slug in args.configs:  # check every folder before hours of training
        for seed in args.seeds:
            check_can_train(out / slug / f"seed{seed}", args.force)
    began = time.perf_counter()
    rows = [row for slug in args.configs for seed in args.seeds for row in run_config(slug, seed, args, out)]
    write_csv(rows, out / f"{args.table}.csv")
    note = (f"{args.data}, first {args.subset} training images, {args.minutes:g} min of training per run "
            f"(capped at {args.max_epochs} epochs), seeds {', '.join(map(str, args.seeds))}; FID and KID from "
            f"N = {args.n} samples against held-out images ({args.features} features). The whole ablation "
            f"took {time.perf_counter() - began:.0f} s.")
    text = note + "\n\n" + table(rows)
    (out / f"{args.table}.md").write_text(text + "\n")
    plot(rows, out / f"{args.table}.png")
    print(text, flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    add_data_args(p, "ablate")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                   help=f"configurations (see --list) or groups ({', '.join(GROUPS)}); default: the levers")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (the table shows their mean)")
    p.add_argument("--subset", type=int, default=10_000, help="training images (the first ones)")
    p.add_argument("--minutes", type=float, default=2.0, help="training minutes per run")
    p.add_argument("--every-minutes", type=float, default=1.0, help="a scored snapshot every this many training minutes")
    p.add_argument("--max-epochs", type=int, default=1000, help="epoch cap")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--table", default="ablate", help="name of the table files written under --out")
    add_scoring_args(p, n=300, force_help="train every configuration again, replacing its run folders", models=False)
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
