"""The paper's few-sample claim: NeuroSQL, VAE, GAN and DDPM trained on only N training images,
N in {100, 500, 1000, 5000}, each scored by FID against held-out images and by pixel distances
(including the memorisation check: with few images a model may just copy them).

Budget: every model sees the same number of training images, --steps x batch size (128), i.e.
max_epochs = round(steps * 128 / N) -- the same number of gradient steps per model and N, within
the rounding of the last batch. NeuroSQL's assignment block m is min(256, N).

Writes, under --out (default runs/fewshot/<data>):
  n<N>/<model>/      run folders (reused on a rerun when eval.json is there; --force retrains)
  fewshot.csv        one row per (N, model), plus the real data's own scores per N
  fewshot.md         FID and pixel-distance tables (rows: models, columns: N)
  fewshot.png        FID and pixel distance syn->train against N, real-data baselines dashed
  fewshot_samples.png  an 8x8 sample grid per (N, model)

    python -m experiments.fewshot                                  # MNIST, 500 steps, N=300 scored
    python -m experiments.fewshot --sizes 100 1000 --models NeuroSQL VAE --steps 2000
    python -m experiments.fewshot @experiments/gpu/fewshot.args             # GPU-sized
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner import (
    MODELS, ExperimentError, add_data_args, add_scoring_args, check_can_train, check_models, fit, markdown_table,
    script_main, script_parser, trained_and_scored, write_csv,
)

#: metric columns of fewshot.csv: (key, real-data key)
METRICS: list[tuple[str, str | None]] = [
    ("fid", "baseline_fid"), ("kid_mean", "baseline_kid_mean"), ("precision", "baseline_precision"),
    ("recall", "baseline_recall"), ("pixel_syn_to_train", "pixel_test_to_train"),
    ("pixel_train_to_syn", "pixel_train_to_test"), ("memorisation_ratio", None), ("memorisation_flag", None),
    ("lpips_syn_nn", "lpips_test_nn"), ("train_total_time_s", None),
]


def epochs_for(n: int, steps: int, batch_size: int) -> int:
    """Epochs that show a model steps x batch_size images from a set of n (at least 1)."""
    return max(1, round(steps * batch_size / n))


def train(label: str, n: int, args: argparse.Namespace, run_dir: Path) -> None:
    config, flags = MODELS[label]
    extra = [*flags, "--data.subset", str(n), "--data.batch_size", str(args.batch_size),
             "--trainer.max_epochs", str(epochs_for(n, args.steps, args.batch_size))]
    if label == "NeuroSQL":
        config = args.neurosql_config
        extra += ["--model.block_size", str(args.block_size)]
    fit(config, run_dir, args.data, args.data_dir, [*extra, *args.cli_args])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("fid", "FID vs held-out images ↓"), ("pixel_syn_to_train", "pixel MSE, sample → nearest training image"))
    for ax, (key, title) in zip(axes, panels):
        for model in dict.fromkeys(r["model"] for r in rows):
            pts = [(r["N"], r[key]) for r in rows if r["model"] == model and r[key] is not None]
            if pts:
                ns, ys = zip(*pts)
                style = "k--" if model.startswith("real") else "o-"
                ax.plot(ns, ys, style, label=model)
        ax.set_xscale("log")
        ax.set_xlabel("training images N")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sample_sheet(run_dirs: dict[tuple[int, str], Path], path: Path) -> None:
    """samples.png of every run: rows = N, columns = model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    sizes = list(dict.fromkeys(n for n, _ in run_dirs))
    models = list(dict.fromkeys(m for _, m in run_dirs))
    fig, axes = plt.subplots(len(sizes), len(models), figsize=(2.6 * len(models), 2.7 * len(sizes)), squeeze=False)
    for i, n in enumerate(sizes):
        for j, model in enumerate(models):
            ax = axes[i][j]
            ax.imshow(np.asarray(Image.open(run_dirs[(n, model)] / "samples.png").convert("RGB")))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(model)
            if j == 0:
                ax.set_ylabel(f"N = {n:,}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out or f"runs/fewshot/{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    check_models(args.models)
    if min(args.sizes) < 2:
        raise ExperimentError(f"every N must be at least 2, got {args.sizes}")
    run_dirs = {(n, label): out / f"n{n}" / label.lower() for n in args.sizes for label in args.models}
    for run_dir in run_dirs.values():
        check_can_train(run_dir, args.force)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        report = None
        for label in args.models:
            run_dir = run_dirs[(n, label)]
            report = trained_and_scored(
                f"N={n} {label}", run_dir, lambda: train(label, n, args, run_dir), args.force, args.n,
                args.data_dir, args.features, args.fid_method, args.seed,
            )
            m = report["metrics"]
            rows.append({"N": n, "model": label, "epochs": m["train_epochs"], **{k: m[k] for k, _ in METRICS}})
        m = report["metrics"]
        rows.append({"N": n, "model": "real data (train vs held-out)", "epochs": None,
                     **{k: (m[base] if base else None) for k, base in METRICS}})
    write_csv(rows, out / "fewshot.csv")
    plot(rows, out / "fewshot.png")
    sample_sheet(run_dirs, out / "fewshot_samples.png")
    models = list(dict.fromkeys(r["model"] for r in rows))
    header = ["model"] + [f"N={n:,}" for n in args.sizes]

    def table(key: str) -> str:
        cells = {(r["model"], r["N"]): r[key] for r in rows}
        return markdown_table(header, [[model] + [cells.get((model, n)) for n in args.sizes] for model in models])

    settings = report["settings"] if report else {}
    text = (
        f"{args.data}, first N training images; every model sees {args.steps} x {args.batch_size} images "
        f"(max_epochs = round({args.steps}·{args.batch_size}/N)); {settings.get('n_samples')} samples scored "
        f"against {settings.get('n_heldout_images')} held-out images ({settings.get('feature_extractor_id')}).\n\n"
        f"FID ↓ (real data: the N training images vs the held-out ones)\n\n{table('fid')}\n\n"
        f"Pixel MSE from each sample to its nearest training image (real data: held-out → training)\n\n"
        f"{table('pixel_syn_to_train')}\n\n"
        f"Memorisation ratio: median syn→train / held-out→train distance (≪ 1: samples copy training images)\n\n"
        f"{table('memorisation_ratio')}\n"
    )
    (out / "fewshot.md").write_text(text)
    print(text, flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    add_data_args(p, "fewshot")
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 5000])
    p.add_argument("--steps", type=int, default=500, help="gradient steps' worth of images per model and N")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--block-size", type=int, default=256, help="NeuroSQL's m (m ≥ N: one global assignment)")
    p.add_argument("--neurosql-config", default=MODELS["NeuroSQL"][0], help="model piece for NeuroSQL")
    add_scoring_args(p, n=300, force_help="train every run again, replacing its folder")
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
