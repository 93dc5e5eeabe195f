"""The paper's main comparison: NeuroSQL, VAE, GAN and DDPM trained under one matched budget on
one dataset, each scored with every metric of ``neurosql_pl.evaluate``, samples side by side.

Budget (CPU-sized default): the same WALL TIME per model (--minutes, Lightning's
``trainer.max_time``), capped at --max-epochs, on the same data, batch size and latent size d, with
the same generator network for NeuroSQL, VAE (decoder) and GAN; the DDPM's denoiser has the same
parameter count (experiments/configs/model/ddpm.yaml). ``--budget epochs`` gives every model the
same number of epochs (--max-epochs) instead, and the table shows the time each took.

Seeds: each model is trained once per training seed (--seeds, ``seed_everything``); the table
shows the mean over seeds and the range of FID. Models named in --one-seed (default: the DDPM, whose
1,000-step sampling dominates the scoring time) get the first seed only.

Writes, under --out (default runs/compare/<data>):
  <model>/seed<s>/      the run folder: config.yaml, metrics.json, samples.png, checkpoints/last.ckpt,
                        eval.json (a finished run is reused on a rerun; --force trains it again)
  compare.csv           one row per (model, seed), one per model (seed "mean"), one for the real data
  compare.md            the markdown table (mean over seeds)
  compare.png           one 8x8 sample grid per model (first seed), side by side, and real images

    python -m experiments.compare                        # MNIST, 6 min per model, seeds 0 1, N=1000
    python -m experiments.compare --data celeba @experiments/gpu/compare.args   # GPU-sized
    python -m experiments.compare -- --data.subset 10000              # extra CLI flags for every fit
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.runner import (
    MODELS, add_data_args, add_scoring_args, check_can_train, check_models, fit, markdown_table, max_time_flags,
    mean_of, script_main, script_parser, trained_and_scored, write_csv,
)
from neurosql_pl.run_folder import EvaluationError, dataset_images, epoch_times, heldout_dataset, run_datamodule

#: (column, eval.json metric key, real-data key) in table order; KID is shown ×10³ in the table
COLUMNS: list[tuple[str, str, str | None]] = [
    ("FID ↓", "fid", "baseline_fid"),
    ("KID×10³ ↓", "kid_mean", "baseline_kid_mean"),
    ("precision ↑", "precision", "baseline_precision"),
    ("recall ↑", "recall", "baseline_recall"),
    ("density", "density", "baseline_density"),
    ("coverage ↑", "coverage", "baseline_coverage"),
    ("pixel syn→train", "pixel_syn_to_train", "pixel_test_to_train"),
    ("pixel train→syn ↓", "pixel_train_to_syn", "pixel_train_to_test"),
    ("memorisation ratio", "memorisation_ratio", None),
    ("LPIPS syn→NN", "lpips_syn_nn", "lpips_test_nn"),
    ("SSIM syn→NN", "ssim_syn_nn", "ssim_test_nn"),
    ("recon MSE ↓", "recon_mse", None),
    ("recon SSIM ↑", "recon_ssim", None),
    ("recon LPIPS ↓", "recon_lpips", None),
]


def train(label: str, seed: int, args: argparse.Namespace, run_dir: Path) -> None:
    config, flags = MODELS[label]
    if label == "NeuroSQL":
        config = args.neurosql_config
        if args.block_size is not None:
            flags = [*flags, "--model.block_size", str(args.block_size)]
    budget = ["--seed_everything", str(seed), "--trainer.max_epochs", str(args.max_epochs)]
    if args.budget == "time":
        budget += max_time_flags(args.minutes)
    fit(config, run_dir, args.data, args.data_dir, [*flags, *budget, *args.cli_args])


def full_epoch_time(run_dir: Path) -> float | None:
    """Mean time of the run's epochs, leaving out the last when a wall-time budget may have cut it."""
    times = epoch_times(run_dir)
    return float(np.mean(times[:-1] if len(times) > 1 else times)) if times else None


def seeds_of(label: str, args: argparse.Namespace) -> list[int]:
    """The training seeds of one model: all of --seeds, or the first for a model in --one-seed."""
    return args.seeds[:1] if label in args.one_seed else list(args.seeds)


def row_of(label: str, seed: int, report: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    m = report["metrics"]
    row: dict[str, Any] = {"model": label, "seed": seed, "epochs": m["train_epochs"], "epoch_time_s": full_epoch_time(run_dir),
                           "train_time_s": m["train_total_time_s"], "eval_time_s": report["timing"]["eval_total_s"],
                           "sample_ms_per_image": 1e3 * report["timing"]["sample_s"] / report["settings"]["n_samples"]}
    row.update({key: m[key] for _, key, _ in COLUMNS})
    return row


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's rows (one per seed) → their mean, with the number of seeds and the FID range."""
    row: dict[str, Any] = {"model": rows[0]["model"], "seed": "mean", "seeds": len(rows)}
    row.update({key: mean_of(rows, key) for key in rows[0] if key not in ("model", "seed")})
    fids = [r["fid"] for r in rows]
    row["fid_range"] = f"{min(fids):.1f}–{max(fids):.1f}" if len(rows) > 1 else None
    return row


def real_row(report: dict[str, Any]) -> dict[str, Any]:
    """The real data's own scores (training images vs held-out ones): what a perfect model gets."""
    m = report["metrics"]
    row: dict[str, Any] = {"model": "real data (train vs held-out)", "seed": None, "seeds": None}
    row.update({key: (m[base] if base else None) for _, key, base in COLUMNS})
    return row


def side_by_side(run_dirs: dict[str, Path], real: torch.Tensor | None, path: Path) -> None:
    """The models' samples.png grids (and a grid of real images) in one row, titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from neurosql_pl.images import image_grid

    panels = [(label, np.asarray(Image.open(d / "samples.png").convert("RGB"))) for label, d in run_dirs.items()]
    if real is not None:
        panels.append(("real (held-out)", image_grid(real)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
    for ax, (label, grid) in zip(np.atleast_1d(axes), panels):
        ax.imshow(grid)
        ax.set_title(label, fontsize=11)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_images(run_dir: Path, data_dir: str, n: int = 64) -> torch.Tensor | None:
    """n held-out images of the run's dataset, in [-1, 1] (None when it has no held-out split)."""
    try:
        held = heldout_dataset(run_datamodule(run_dir, data_dir))
    except EvaluationError:
        return None
    return dataset_images(held, torch.arange(min(n, len(held))))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out or f"runs/compare/{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    check_models([*args.models, *args.one_seed])
    run_dirs = {(label, seed): out / label.lower() / f"seed{seed}" for label in args.models
                for seed in seeds_of(label, args)}
    for run_dir in run_dirs.values():  # check them all before hours of training
        check_can_train(run_dir, args.force)
    seed_rows, reports = [], {}
    for (label, seed), run_dir in run_dirs.items():
        report = trained_and_scored(
            f"{label} seed {seed}", run_dir, lambda: train(label, seed, args, run_dir), args.force, args.n,
            args.data_dir, args.features, args.fid_method, args.seed,
        )
        reports[label, seed] = report
        seed_rows.append(row_of(label, seed, report, run_dir))
    rows = [mean_row([r for r in seed_rows if r["model"] == label]) for label in args.models]
    rows.append(real_row(next(iter(reports.values()))))
    write_csv([*seed_rows, *rows], out / "compare.csv")
    header = ["model", "seeds", "epochs", "s/epoch", "train s", "ms/sample"] + [c for c, _, _ in COLUMNS] + ["FID range"]
    keys = (["model", "seeds", "epochs", "epoch_time_s", "train_time_s", "sample_ms_per_image"]
            + [k for _, k, _ in COLUMNS] + ["fid_range"])
    first = next(iter(reports.values()))["settings"]
    budget = (f"{args.minutes:g} min of training per model (capped at {args.max_epochs} epochs)" if args.budget == "time"
              else f"{args.max_epochs} epochs per model")
    single = [label for label in args.models if len(seeds_of(label, args)) < len(args.seeds)]
    seeds = (f"training seed {args.seeds[0]}" if len(args.seeds) == 1 else
             f"training seeds {', '.join(map(str, args.seeds))}, mean over seeds"
             + (f" ({', '.join(single)}: seed {args.seeds[0]} only)" if single else ""))
    note = (f"{args.data}, budget: {budget}, {seeds}; N = {first['n_samples']} samples scored against "
            f"{first['n_heldout_images']} held-out images ({first['feature_extractor_id']} features); "
            f"pixel distances are mean squared errors in [-1, 1] pixel units to the nearest of all "
            f"{first['n_train_reference']} training images. s/epoch leaves out the last epoch, which the "
            f"budget may have cut; training + evaluation took {sum(r['train_time_s'] + r['eval_time_s'] for r in seed_rows):.0f} s.")

    def cell(row: dict[str, Any], key: str) -> Any:
        value = row.get(key)
        return 1e3 * value if key == "kid_mean" and value is not None else value

    table = markdown_table(header, [[cell(r, k) for k in keys] for r in rows])
    (out / "compare.md").write_text(note + "\n\n" + table + "\n")
    firsts = {label: run_dirs[label, seeds_of(label, args)[0]] for label in args.models}
    side_by_side(firsts, real_images(next(iter(firsts.values())), args.data_dir), out / "compare.png")
    print(note + "\n\n" + table, flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    add_data_args(p, "compare")
    p.add_argument("--neurosql-config", default=MODELS["NeuroSQL"][0],
                   help="model piece for NeuroSQL (neurosql_mse: the former MSE default; neurosql_lpips: the paper's loss)")
    p.add_argument("--block-size", type=int, default=None, help="NeuroSQL's assignment block m (default: the config's)")
    p.add_argument("--budget", choices=["time", "epochs"], default="time")
    p.add_argument("--minutes", type=float, default=6, help="training minutes per model (--budget time)")
    p.add_argument("--max-epochs", type=int, default=100, help="epoch cap (the whole budget with --budget epochs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (seed_everything) per model")
    p.add_argument("--one-seed", nargs="*", default=["DDPM"], metavar="MODEL",
                   help="models trained with the first seed only (default: DDPM; none: --one-seed with no name)")
    add_scoring_args(p, n=1000, force_help="train every model again, replacing its run folder")
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
