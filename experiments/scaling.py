"""Figure 5 of the paper: mean epoch time against the number of training images N.

For each N (first-N MNIST images) and each model — VAE, GAN and NeuroSQL at several local
assignment sizes m (m ≥ N: one global assignment) — one short CLI `fit` runs in this process; the epoch time is the mean
of the epochs after the first (warm-up), assignment step included. Writes, under --out:
  scaling.csv   model, m, N, epoch_time_s
  scaling.png   log-log plot with the least-squares slope of each curve in the legend
  scaling.md    the same as a markdown table, with the slopes

    python -m experiments.scaling --out runs/scaling                      # CPU-sized default
    python -m experiments.scaling @experiments/gpu/scaling.args                # GPU-sized
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from experiments.runner import MODELS, ExperimentError, fit, script_main, script_parser, write_csv
from neurosql_pl.run_folder import epoch_times


def epoch_time(model_config: str, n: int, epochs: int, run_dir: Path, data_dir: str, extra: list[str]) -> float:
    """Mean epoch time (s) of a fresh `fit` on the first n MNIST images, first epoch excluded."""
    fit(model_config, run_dir, "mnist", data_dir,
        ["--data.subset", str(n), "--trainer.max_epochs", str(epochs), *extra], checkpoints=False)
    times = epoch_times(run_dir)
    if not times:
        raise ExperimentError(f"the run in {run_dir} recorded no epoch times")
    return float(np.mean(times[1:] if len(times) > 1 else times))


def slope(ns: list[int], ts: list[float]) -> float:
    """Least-squares slope of log t against log N."""
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def plot(rows: list[dict], path: Path) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    slopes = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = [(r["N"], r["epoch_time_s"]) for r in rows if r["label"] == label]
        ns, ts = zip(*pts)
        slopes[label] = slope(list(ns), list(ts)) if len(ns) > 1 else float("nan")
        ax.loglog(ns, ts, "o-", label=f"{label} (slope {slopes[label]:.2f})")
    ax.set_xlabel("training images N")
    ax.set_ylabel("mean epoch time (s)")
    ax.set_title("Epoch time against N (MNIST, 2-core CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return slopes


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = [("VAE", "vae", []), ("GAN", "gan", [])]
    # d fixed at the baselines' 16: the default's "auto" would change it with N (6 up to 5,000 images)
    models += [(f"NeuroSQL m={m}", args.neurosql_config, ["--model.block_size", str(m), "--model.latent_dim", "16"])
               for m in args.blocks]
    rows = []
    for n in args.sizes:
        for label, config, extra in models:
            t = epoch_time(config, n, args.epochs, out / "work", args.data_dir, extra)
            rows.append({"label": label, "model": config, "m": extra[1] if extra else "", "N": n, "epoch_time_s": t})
            print(f"{label:>18}  N={n:>6}  {t:7.2f} s/epoch", flush=True)
    shutil.rmtree(out / "work", ignore_errors=True)
    write_csv(rows, out / "scaling.csv")
    slopes = plot(rows, out / "scaling.png")
    sizes = sorted({r["N"] for r in rows})
    lines = ["| model | " + " | ".join(f"N={n:,}" for n in sizes) + " | log-log slope |", "|---" * (len(sizes) + 2) + "|"]
    for label, s in slopes.items():
        cells = [next((f"{r['epoch_time_s']:.2f}" for r in rows if r["label"] == label and r["N"] == n), "–") for n in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {s:.2f} |")
    (out / "scaling.md").write_text("Mean epoch time (s), first epoch excluded.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--out", default="runs/scaling")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000, 60000])
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--neurosql-config", default=MODELS["NeuroSQL"][0], help="model piece for NeuroSQL")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is excluded from the mean")
    return parser


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
