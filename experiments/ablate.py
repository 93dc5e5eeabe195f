"""Which settings make NeuroSQL's images good: each quality lever alone against the former default,
at the same wall-clock budget, with the VAE and the GAN trained the same way as reference lines.

Every configuration trains on the same images (default: the first 10,000 MNIST training images)
for the same wall time (--minutes, Lightning's ``trainer.max_time``). A snapshot checkpoint is
written every --every-minutes of training; each snapshot and the final model are scored by
``neurosql_pl.evaluate`` (FID and KID from --n samples against held-out images), so every
configuration gives a curve of FID against training seconds.

Writes, under --out (default runs/ablate/<data>):
  <config>/seed<s>/   the run folders (config.yaml, metrics.json, checkpoints/, snapshots.json,
                      eval_<snapshot>.json); a finished, scored run is reused on a rerun, and
                      a score made with other --n / --features / --seed is kept beside its
                      file (eval.json → eval.n1000_inception_seed0.json), not overwritten
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
import time
from pathlib import Path
from typing import Any

from experiments.runner import (
    MODELS, ExperimentError, Scoring, add_data_args, add_scoring_args, check_can_train, fit, learning_rate_sweep,
    markdown_table, max_time_flags, mean_of, points_of, run_state, scored, script_main, script_parser,
    snapshot_flags, write_csv,
)
from neurosql_pl.run_folder import EVAL_FILE

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
}
#: what `make ablate` runs: every lever alone, the references and their combination (≈ 85 min on 2 cores)
DEFAULT_CONFIGS: list[str] = list(CONFIGS)
#: model label → its configuration here; the learning-rate sweep (runner.LEARNING_RATES, not in the
#: default run) adds <slug>_lr<rate> for each: the same tuning effort for every model
SWEPT: dict[str, str] = {"NeuroSQL": "default", "VAE": "vae", "GAN": "gan"}
CONFIGS.update({f"{slug}_lr{tag}": (f"{label}, lr {lr:g}", MODELS[label][0], flags)
                for label, slug in SWEPT.items() for tag, lr, flags in learning_rate_sweep(label)})
#: the default with a fixed latent dimension (not in the default run): d = 16, the default's "auto"
#: above 5,000 images, which the tables of 2026-12-07/08 used at every N; d = 6, its "auto" at or below
CONFIGS.update({f"default_d{d}": (f"the default with latent dimension d = {d}", "neurosql", ["--model.latent_dim", str(d)])
                for d in (6, 16)})
#: named groups accepted by --configs
GROUPS: dict[str, list[str]] = {
    "levers": DEFAULT_CONFIGS,
    "lr": ["base", *[s for slug in SWEPT.values() for s in CONFIGS if s == slug or s.startswith(f"{slug}_lr")]],
}

#: (column, eval.json metric key) of the table; KID is shown ×10³
COLUMNS: list[tuple[str, str]] = [
    ("FID ↓", "fid"), ("KID×10³ ↓", "kid_mean"), ("precision ↑", "precision"), ("recall ↑", "recall"),
    ("recon MSE ↓", "recon_mse"), ("pixel syn→train", "pixel_syn_to_train"),
    ("memorisation ratio", "memorisation_ratio"),
]


def expand_configs(names: list[str]) -> list[str]:
    """Configuration slugs of ``names`` (slugs or GROUPS names), in order, each once."""
    slugs = list(dict.fromkeys(slug for name in names for slug in GROUPS.get(name, [name])))
    unknown = [c for c in slugs if c not in CONFIGS]
    if unknown:
        raise ExperimentError(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)} "
                              f"or a group: {', '.join(GROUPS)}")
    return slugs


def train(slug: str, seed: int, args: argparse.Namespace, run_dir: Path) -> None:
    _, config, flags = CONFIGS[slug]
    fit(config, run_dir, args.data, args.data_dir, [
        *flags, *(["--data.subset", str(args.subset)] if args.subset else []),
        "--seed_everything", str(seed),
        "--trainer.max_epochs", str(args.max_epochs), *max_time_flags(args.minutes),
        *snapshot_flags(every_s=60 * args.every_minutes), *args.cli_args,
    ])


def run_config(slug: str, seed: int, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Train (unless finished) and score one (configuration, seed): one row per point."""
    run_dir = out / slug / f"seed{seed}"
    if args.force or run_state(run_dir) not in ("trained", "evaluated"):
        print(f"[{slug} seed {seed}] training {args.minutes:g} min into {run_dir}", flush=True)
        train(slug, seed, args, run_dir)
    rows = []
    for point in points_of(run_dir):
        began = time.perf_counter()
        out_file = run_dir / (EVAL_FILE if point["name"] == "end" else f"eval_{point['name']}.json")
        m = scored(point["ckpt"], out_file, Scoring.of(args))["metrics"]
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
            (mean_of(ends, "baseline_kid_mean") or 0) * 1e3, *[None] * (len(COLUMNS) - 2), None]
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
    images = f"first {args.subset} training images" if args.subset else "all training images"
    note = (f"{args.data}, {images}, {args.minutes:g} min of training per run "
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
    p.add_argument("--subset", type=int, default=10_000, help="training images (the first ones; 0 = all)")
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
