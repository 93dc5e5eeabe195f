"""The paper's few-sample claim as a fair contest: NeuroSQL, the VAE and the GAN trained on only N
training images, N in {100, 500, 1000, 5000}, scored along training by FID and KID against
held-out images and by the memorisation ratio (with few images a model may just copy them).

Budget: every run sees the same number of training images, --steps x --batch-size (1000 x 128),
i.e. max_epochs = round(steps * batch / N): the same number of gradient steps per model and N,
within the rounding of the last batch. NeuroSQL's assignment block m is min(--block-size, N).
Seeds: each run trains with every seed of --seeds (seed_everything; default 0 1), except at N
above --one-seed-above (default 1000), which trains with the first only. Tables show the mean over
seeds and the range.

Curves: a snapshot checkpoint is kept at each fraction of the budget in --curve (default 25 % and
50 %); the snapshots and the end are scored with --n-curve samples (default 300), which gives FID
and KID against training steps, every point of a curve scored alike. The table's values are the
end scored again with --n samples (default 1000; KID is unbiased at any n, FID is biased upwards
at small n, the same for every run). A run whose curve FID still fell by more than --flat-tol (10 %)
over its last leg is marked "climbing": it was judged mid-climb, so train again with more --steps
(in another --out). A run whose memorisation ratio (median distance from a sample to its nearest
training image, over the same for held-out images) is below --copy-below (0.7, the few-shot
goal's floor; evaluate flags copies below 0.5) in any seed "copies" and cannot win its N.

What runs: --models (default NeuroSQL VAE GAN) and --variants, named configurations of a model
(--list prints them with their flags): NeuroSQL's levers (oversample = k from N, os3 / os5 / os10 =
k codes per image, noise, stlpips, rho05, d2 / d4 / d6 / d8 = latent dimension, d6q = d = 6
stopped at a quarter of the budget, d4os10; trunc2 scores the NeuroSQL run with codes drawn from
N(0, I) cut at ±2), the baselines' own small-N levers
(vae_beta05, gan_r1, gan_sn) and the groups "levers", "baseline_levers", "lr"
(runner.LEARNING_RATES: at least three learning rates around each model's own, the same tuning
effort for every model) and "default" (= NeuroSQL). Flags after -- go to every fit.

Writes, under --out (default runs/fewshot/<data>); <table> is --table (default "fewshot"):
  n<N>/<run>/seed<s>/  run folders: config.yaml, metrics.json, checkpoints/ (last, snap<k>),
                       snapshots.json, eval_<point>_n<n>[_truncation<t>].json; a finished run is
                       reused on a rerun (other tables included), --force trains it again
  <table>.csv          the end: one row per (run, N, seed), one per (run, N) (seed "mean"), real data
  <table>_curves.csv   one row per (run, N, seed, point): steps, epochs, seconds, FID, KID, memorisation
  <table>.md           the table: per N and run, the mean over seeds with ranges, and a verdict
  <table>.png          FID and KID×10³ against N;  <table>_curves.png  the same against steps, per N
  <table>_samples.png  an 8x8 sample grid per (N, run), first seed

Cost on 2 CPU cores, not shared (estimated from timed pieces: a scoring takes ≈ 12 s + 0.12 s per
sample, 48 s at n = 300 and 2.2 min at n = 1000, plus the real images' statistics once per N;
training 1000 x 128 images takes 1.3 (NeuroSQL), 1.8 (VAE) and 2.4 (GAN) min, ST-LPIPS ≈ 13 min;
scoring is three quarters of the time; on a shared machine expect up to twice as long):
    python -m experiments.fewshot                 # the contest: 21 runs x (3 + 1 scorings), ≈ 2.5 h
    python -m experiments.fewshot --n 500 --curve 0.5                  # cheaper: ≈ 1.8 h
    python -m experiments.fewshot --sizes 100 500 --variants levers --table levers    # ≈ 3 h
    python -m experiments.fewshot --sizes 100 500 --variants lr --table lr --seeds 0  # ≈ 2 h
    python -m experiments.fewshot @experiments/gpu/fewshot.args                        # GPU-sized
A later table reuses the runs of an earlier one in the same --out (the levers and lr tables the
contest's NeuroSQL, VAE and GAN runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner import (
    LEARNING_RATES, MODELS, ExperimentError, Scoring, add_data_args, add_scoring_args, check_can_train,
    check_model_flags, fit, learning_rate_sweep, markdown_table, mean_of, points_of, range_of, run_state, scored,
    script_main, script_parser, snapshot_flags, write_csv,
)
from neurosql_pl.run_folder import read_run_config


@dataclass(frozen=True)
class Variant:
    """A named run: a model of runner.MODELS, extra CLI flags for its fit, and how its samples
    are drawn when scored (``truncation``). ``run``: the variant whose run folder it scores
    (the same training), itself when None. ``budget``: the fraction of --steps it trains for
    (< 1: stopped early, fewer images seen than the other runs; its snapshots are fractions of
    its own budget)."""

    what: str
    model: str = "NeuroSQL"
    flags: tuple[str, ...] = ()
    truncation: float | None = None
    run: str | None = None
    budget: float = 1.0


#: name → Variant: the models as configured, NeuroSQL's levers, and every model's learning rates
VARIANTS: dict[str, Variant] = {
    **{label: Variant(f"{label} as configured (model piece {piece})", label) for label, (piece, _) in MODELS.items()},
    "oversample": Variant("NeuroSQL, oversampled lattice: k codes per image (auto), assignment every 10 epochs",
                          flags=("--model.oversample", "auto", "--model.assign_every", "10")),
    **{f"os{k}": Variant(f"NeuroSQL, oversampled lattice: k = {k} codes per image, assignment every 10 epochs",
                         flags=("--model.oversample", str(k), "--model.assign_every", "10")) for k in (3, 5, 10)},
    "noise": Variant("NeuroSQL, noise 0.1 on the codes in training, costs from fresh passes",
                     flags=("--model.code_noise", "0.1", "--model.cost_outputs", "fresh")),
    "stlpips": Variant("NeuroSQL, ST-LPIPS(alex) + pixel L1 (weight 1)",
                       flags=("--model.perceptual", "stlpips-alex", "--model.pixel_weight", "1.0")),
    "rho05": Variant("NeuroSQL, momentum ρ = 0.5, costs from fresh passes",
                     flags=("--model.rho", "0.5", "--model.cost_outputs", "fresh")),
    **{f"d{d}": Variant(f"NeuroSQL, latent dimension d = {d}", flags=("--model.latent_dim", str(d))) for d in (2, 4, 6, 8, 16)},
    "d6q": Variant("NeuroSQL, d = 6 trained on a quarter of the budget (stopped early: its curve rises later)",
                   flags=("--model.latent_dim", "6"), budget=0.25),
    "d4os10": Variant("NeuroSQL, d = 4 and k = 10 codes per image, assignment every 10 epochs",
                      flags=("--model.latent_dim", "4", "--model.oversample", "10", "--model.assign_every", "10")),
    "trunc2": Variant("NeuroSQL's run, sample codes truncated to ±2", truncation=2.0, run="NeuroSQL"),
    "vae_beta05": Variant("VAE, β = 0.5 (a lighter KL term)", "VAE", ("--model.beta", "0.5")),
    "gan_r1": Variant("GAN, R1 penalty γ = 10 on the discriminator", "GAN", ("--model.r1_gamma", "10")),
    "gan_sn": Variant("GAN, spectral norm in the discriminator", "GAN", ("--model.spectral_norm", "true")),
    **{f"{label.lower()}_d6": Variant(f"{label}, latent dimension d = 6 (NeuroSQL's lever, tried on the baseline)", label,
                                      ("--model.latent_dim", "6")) for label in ("VAE", "GAN")},
    **{f"{label}_lr{tag}": Variant(f"{label}, lr {lr:g}", label, tuple(flags))
       for label in LEARNING_RATES for tag, lr, flags in learning_rate_sweep(label)},
}
#: named groups accepted by --variants
GROUPS: dict[str, list[str]] = {
    "default": ["NeuroSQL"],
    "levers": ["NeuroSQL", "oversample", "os3", "os5", "os10", "noise", "stlpips", "rho05", "d2", "d4", "d8", "d4os10",
               "trunc2"],
    "baseline_levers": ["VAE", "vae_beta05", "vae_d6", "GAN", "gan_r1", "gan_sn", "gan_d6"],
    "lr": [name for label in LEARNING_RATES for name in VARIANTS if name == label or name.startswith(f"{label}_lr")],
}
#: eval.json metrics kept per run (end of training), and per point of the curves
FINAL_KEYS = ["fid", "kid_mean", "precision", "recall", "pixel_syn_to_train", "memorisation_ratio", "lpips_syn_nn"]
CURVE_KEYS = ["fid", "kid_mean", "memorisation_ratio"]
REAL = "real data (train vs held-out)"
#: the few-shot goal: a winner's memorisation ratio is at least this (well above evaluate's 0.5 flag)
COPY_BELOW = 0.7


def expand(names: list[str]) -> list[str]:
    """Variant names of ``names`` (names or GROUPS), in order, each once."""
    found = list(dict.fromkeys(v for name in names for v in GROUPS.get(name, [name])))
    unknown = [v for v in found if v not in VARIANTS]
    if unknown:
        raise ExperimentError(f"unknown run(s) {unknown}; see --list, or a group: {', '.join(GROUPS)}")
    return found


def epochs_for(n: int, steps: int, batch_size: int) -> int:
    """Epochs that show a model steps x batch_size images from a set of n (at least 1)."""
    return max(1, round(steps * batch_size / n))


def run_epochs(name: str, n: int, args: argparse.Namespace) -> int:
    """max_epochs of the run ``name`` at N = n: the budget --steps x --batch-size, times the
    variant's fraction of it."""
    return epochs_for(n, max(1, round(args.steps * VARIANTS[name].budget)), args.batch_size)


def snapshot_epochs(epochs: int, fractions: list[float]) -> list[int]:
    """The epochs that end each fraction of an ``epochs`` budget, before the last, each once."""
    return sorted({e for e in (max(1, round(f * epochs)) for f in fractions) if e < epochs})


def seeds_at(n: int, args: argparse.Namespace) -> list[int]:
    """Training seeds at N = n: all of --seeds, or the first above --one-seed-above."""
    return args.seeds[:1] if n > args.one_seed_above else list(args.seeds)


def run_dir_of(out: Path, name: str, n: int, seed: int) -> Path:
    return out / f"n{n}" / (VARIANTS[name].run or name).lower() / f"seed{seed}"


def fit_settings(name: str, n: int, seed: int, args: argparse.Namespace) -> tuple[str, list[str]]:
    """(model piece, CLI flags) of the run ``name`` at N = n with training seed ``seed``."""
    variant = VARIANTS[name]
    piece, flags = MODELS[variant.model]
    flags = list(flags)
    if variant.model == "NeuroSQL":
        piece = args.neurosql_config
        flags += ["--model.block_size", str(args.block_size)]
    epochs = run_epochs(name, n, args)
    budget = ["--data.subset", str(n), "--data.batch_size", str(args.batch_size), "--seed_everything", str(seed),
              "--trainer.max_epochs", str(epochs), *snapshot_flags(at_epochs=snapshot_epochs(epochs, args.curve))]
    return piece, [*flags, *variant.flags, *budget, *args.cli_args]


def check_runs(names: list[str], args: argparse.Namespace, out: Path) -> None:
    """Before any training: every variant's flags exist, and no folder holds an unfinished run or
    a finished one of another budget (unless --force)."""
    for name in names:
        check_model_flags(*fit_settings(name, args.sizes[0], args.seeds[0], args))
        for n in args.sizes:
            for seed in seeds_at(n, args):
                run_dir = run_dir_of(out, name, n, seed)
                check_can_train(run_dir, args.force)
                had = ((read_run_config(run_dir) or {}).get("trainer") or {}).get("max_epochs")
                epochs = run_epochs(name, n, args)
                if not args.force and run_state(run_dir) in ("trained", "evaluated") and had != epochs:
                    raise ExperimentError(f"{run_dir} was trained for {had} epochs, this budget is {epochs}: "
                                          "pass another --out, or --force to train it again")


def eval_file(run_dir: Path, point: str, n: int, truncation: float | None) -> Path:
    return run_dir / f"eval_{point}_n{n}{'' if truncation is None else f'_truncation{truncation:g}'}.json"


def run_one(name: str, n: int, seed: int, args: argparse.Namespace, out: Path,
            done: set[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train (unless finished; with --force, unless in ``done``, the folders this invocation has
    trained or reused) and score one run: its row at the end (--n samples) and one row per point
    of its curve (--n-curve samples)."""
    variant, run_dir, label = VARIANTS[name], run_dir_of(out, name, n, seed), f"N={n} {name} seed {seed}"
    if run_dir not in done and (args.force or run_state(run_dir) not in ("trained", "evaluated")):
        print(f"[{label}] training into {run_dir}", flush=True)
        piece, flags = fit_settings(name, n, seed, args)
        fit(piece, run_dir, args.data, args.data_dir, flags)
    done.add(run_dir)
    head = {"run": name, "model": variant.model, "N": n, "seed": seed}
    curve, points = [], points_of(run_dir)
    for point in points:
        began = time.perf_counter()
        m = scored(point["ckpt"], eval_file(run_dir, point["name"], args.n_curve, variant.truncation),
                   dataclasses.replace(Scoring.of(args), n=args.n_curve), variant.truncation)["metrics"]
        print(f"[{label}] {point['name']}: {point['steps']} steps, FID {m['fid']:.1f} "
              f"({time.perf_counter() - began:.0f} s to score)", flush=True)
        curve.append({**head, "point": point["name"], "steps": point["steps"], "epochs": point["epochs"],
                      "train_s": point["train_s"], **{k: m[k] for k in CURVE_KEYS}})
    end = points[-1]
    report = scored(end["ckpt"], eval_file(run_dir, "end", args.n, variant.truncation), Scoring.of(args),
                    variant.truncation)
    m = report["metrics"]
    fids = [c["fid"] for c in curve[-2:]]
    leg = (fids[1] - fids[0]) / fids[0] if len(fids) == 2 and None not in fids and fids[0] > 0 else None
    row = {**head, "steps": end["steps"], "epochs": end["epochs"], "train_s": end["train_s"],
           **{k: m[k] for k in FINAL_KEYS}, "fid_last_leg": leg,
           "baseline_fid": m["baseline_fid"], "baseline_kid_mean": m["baseline_kid_mean"]}
    return row, curve


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (run, N): means over seeds, FID and KID ranges, the smallest memorisation ratio,
    a verdict (winner: lowest FID at its N of the runs that do not copy; copies; climbing), and
    the real data's own scores per N."""
    out = []
    for n in dict.fromkeys(r["N"] for r in rows):
        at_n = [r for r in rows if r["N"] == n]
        means = []
        for name in dict.fromkeys(r["run"] for r in at_n):
            mine = [r for r in at_n if r["run"] == name]
            ratios = [r["memorisation_ratio"] for r in mine if r["memorisation_ratio"] is not None]
            row = {"run": name, "model": mine[0]["model"], "N": n, "seed": "mean", "seeds": len(mine),
                   **{k: mean_of(mine, k) for k in ("steps", "epochs", "train_s", *FINAL_KEYS, "fid_last_leg")},
                   "fid_range": range_of(mine, "fid"), "kid_range": range_of(mine, "kid_mean", 1e3),
                   "memorisation_min": min(ratios) if ratios else None}
            copies = row["memorisation_min"] is not None and row["memorisation_min"] < args.copy_below
            climbing = row["fid_last_leg"] is not None and row["fid_last_leg"] < -args.flat_tol
            row["verdict"] = ", ".join(v for v, on in (("copies", copies), ("climbing", climbing)) if on)
            means.append(row)
        fair = [r for r in means if "copies" not in r["verdict"] and r["fid"] is not None]
        if fair:
            best = min(fair, key=lambda r: r["fid"])
            best["verdict"] = ", ".join(["winner", *filter(None, [best["verdict"]])])
        out += means
        out.append({"run": REAL, "model": None, "N": n, "seed": None, "seeds": None,
                    "fid": at_n[0]["baseline_fid"], "kid_mean": at_n[0]["baseline_kid_mean"]})
    return out


def table(means: list[dict[str, Any]]) -> str:
    """The markdown table of summary rows, KID ×10³, the last leg's FID change in %."""
    header = ["N", "run", "seeds", "steps", "epochs", "train s", "FID ↓", "FID range", "KID×10³ ↓", "KID×10³ range",
              "memorisation ratio (min)", "FID change, last leg", "verdict"]
    lines = [[r["N"], r["run"], r["seeds"], r.get("steps"), r.get("epochs"), r.get("train_s"), r["fid"],
              r.get("fid_range"), None if r["kid_mean"] is None else 1e3 * r["kid_mean"], r.get("kid_range"),
              r.get("memorisation_min"),
              None if r.get("fid_last_leg") is None else f"{100 * r['fid_last_leg']:+.0f} %", r.get("verdict")]
             for r in means]
    return markdown_table(header, lines)


def plot(rows: list[dict[str, Any]], x: str, path: Path) -> None:
    """FID and KID×10³ (mean over seeds) against ``x``: 'N' (the end rows, one panel each, real
    data dashed) or 'steps' (the curve rows, one column of panels per N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [None] if x == "N" else list(dict.fromkeys(r["N"] for r in rows))
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups) + 1, 7), squeeze=False)
    for j, n in enumerate(groups):
        mine = [r for r in rows if n is None or r["N"] == n]
        for i, (key, scale, title) in enumerate((("fid", 1, "FID ↓"), ("kid_mean", 1e3, "KID×10³ ↓"))):
            ax = axes[i][j]
            for name in dict.fromkeys(r["run"] for r in mine):
                line = [r for r in mine if r["run"] == name and r[key] is not None and r.get(x) is not None]
                xs = sorted(set(r[x] for r in line)) if x == "N" else list(dict.fromkeys(r["point"] for r in line))
                at = [[r for r in line if (r[x] if x == "N" else r["point"]) == v] for v in xs]
                ax.plot([mean_of(a, x) for a in at], [scale * mean_of(a, key) for a in at],
                        "k--" if name == REAL else "o-", label=name)
            ax.set_xscale("log" if x == "N" else "linear")
            ax.set_yscale("log" if key == "fid" else "linear")
            ax.set_xlabel("training images N" if x == "N" else "training steps")
            ax.set_title(title if n is None else f"{title}, N = {n:,}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_sheet(run_dirs: dict[tuple[int, str], Path], path: Path) -> None:
    """samples.png of every run: rows = N, columns = run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    sizes = list(dict.fromkeys(n for n, _ in run_dirs))
    names = list(dict.fromkeys(m for _, m in run_dirs))
    fig, axes = plt.subplots(len(sizes), len(names), figsize=(2.6 * len(names), 2.7 * len(sizes)), squeeze=False)
    for i, n in enumerate(sizes):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(np.asarray(Image.open(run_dirs[(n, name)] / "samples.png").convert("RGB")))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"N = {n:,}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.list:
        for name, v in VARIANTS.items():
            extra = (f" (truncation {v.truncation:g})" if v.truncation else "") + \
                (f" (budget x {v.budget:g})" if v.budget != 1 else "")
            print(f"{name:15s} {v.what}: {' '.join(v.flags)}{extra}")
        return []
    names = expand([*args.models, *args.variants])
    if not names or min(args.sizes) < 2:
        raise ExperimentError(f"need at least one run and every N ≥ 2, got {names} and {args.sizes}")
    out = Path(args.out or f"runs/fewshot/{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    check_runs(names, args, out)
    began, done = time.perf_counter(), set()
    rows, curves = [], []
    for n in args.sizes:
        for name in names:
            for seed in seeds_at(n, args):
                row, curve = run_one(name, n, seed, args, out, done)
                rows.append(row)
                curves += curve
    means = summary(rows, args)
    write_csv([*rows, *means], out / f"{args.table}.csv")
    write_csv(curves, out / f"{args.table}_curves.csv")
    plot([r for r in means if r["fid"] is not None], "N", out / f"{args.table}.png")
    plot(curves, "steps", out / f"{args.table}_curves.png")
    sample_sheet({(n, name): run_dir_of(out, name, n, seeds_at(n, args)[0]) for n in args.sizes for name in names
                  if VARIANTS[name].run is None}, out / f"{args.table}_samples.png")
    note = (f"{args.data}, first N training images; every run sees {args.steps} x {args.batch_size} images "
            f"(max_epochs = round({args.steps}·{args.batch_size}/N)); seeds {', '.join(map(str, args.seeds))}, the "
            f"first only above N = {args.one_seed_above:,}; the end scored with {args.n} samples, the curves "
            f"(snapshots at {', '.join(f'{f:g}' for f in args.curve) or 'none'} of the budget, and the end) with "
            f"{args.n_curve}, against held-out images ({args.features} features). Verdict: 'copies' = a seed's "
            f"memorisation ratio below {args.copy_below:g}; 'climbing' = FID fell by more than {100 * args.flat_tol:g} % "
            f"over the curve's last leg; 'winner' = the lowest FID at its N of the runs that do not copy. "
            f"This invocation took {time.perf_counter() - began:.0f} s (runs and scores reused from earlier "
            f"invocations not counted; each run's training seconds are in the table).")
    legend = "\n".join(f"- {name}: {VARIANTS[name].what}" for name in names)
    text = f"{note}\n\n{table(means)}\n\n{legend}\n"
    (out / f"{args.table}.md").write_text(text)
    print(text, flush=True)
    return means


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    add_data_args(p, "fewshot")
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 5000])
    p.add_argument("--models", nargs="*", default=["NeuroSQL", "VAE", "GAN"], help=f"of {' '.join(MODELS)}")
    p.add_argument("--variants", nargs="*", default=[], help=f"named runs (--list) or groups: {', '.join(GROUPS)}")
    p.add_argument("--list", action="store_true", help="print the runs --variants knows, and exit")
    p.add_argument("--steps", type=int, default=1000, help="gradient steps' worth of images per run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--block-size", type=int, default=256, help="NeuroSQL's m (m ≥ N: one global assignment)")
    p.add_argument("--neurosql-config", default=MODELS["NeuroSQL"][0], help="model piece of NeuroSQL and its variants")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (seed_everything)")
    p.add_argument("--one-seed-above", type=int, default=1000, help="N above this train with the first seed only")
    p.add_argument("--curve", type=float, nargs="*", default=[0.25, 0.5],
                   help="fractions of the budget with a scored snapshot (the end is always scored)")
    p.add_argument("--n-curve", type=int, default=300, help="samples scored per point of the curves")
    p.add_argument("--flat-tol", type=float, default=0.1, help="FID falling more than this over the last leg: climbing")
    p.add_argument("--copy-below", type=float, default=COPY_BELOW,
                   help="memorisation ratio below which a run copies and cannot win (default: the few-shot goal's 0.7)")
    p.add_argument("--table", default="fewshot", help="name of the table files written under --out")
    add_scoring_args(p, n=1000, force_help="train every run again, replacing its folder", models=False)
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
