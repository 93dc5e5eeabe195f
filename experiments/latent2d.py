"""The paper's Figure 2: a 2-D latent space on MNIST, NeuroSQL's learnt codes against a VAE's.

Both models are trained with d = 2 on the same images and epochs (the VAE's decoder is
NeuroSQL's generator). NeuroSQL's code of image i is its row of the ``latents`` buffer (a
permutation of the 2-D quantile lattice, momentum-smoothed); the VAE's is its encoder mean.

Writes, under --out (default runs/latent2d):
  neurosql/, vae/   the run folders (reused on a rerun when checkpoints/last.ckpt is there)
  latent2d.png      top: codes of the training images coloured by digit; bottom: images decoded
                    from a 15 x 15 grid of Gaussian quantiles over the latent plane
  latent2d.csv      model, index, label, z1, z2 for every training image
  latent2d.md       per model: k-NN digit accuracy from the 2-D codes (how well digits separate),
                    mean and std of the codes per axis (N(0, I) would give 0 and 1), reconstruction MSE

    python -m experiments.latent2d                          # MNIST 10k, 20 epochs (CPU-sized)
    python -m experiments.latent2d @experiments/gpu/latent2d.args   # all 60k, 50 epochs (GPU-sized)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.runner import ExperimentError, check_can_train, fit, markdown_table, script_main, script_parser, write_csv
from neurosql_pl.run_folder import (
    METRICS_FILE, last_checkpoint, load_model, read_checkpoint, read_run_config, run_datamodule,
)

#: label → experiments/configs/model piece
MODELS = {"NeuroSQL": "neurosql_mse", "VAE": "vae"}


def trained(label: str, args: argparse.Namespace, run_dir: Path) -> tuple[Any, Any]:
    """(model in eval mode, set-up datamodule): loaded from run_dir when it holds a finished run."""
    ckpt = last_checkpoint(run_dir)
    if ckpt.is_file() and (run_dir / METRICS_FILE).is_file() and not args.force:
        print(f"[{label}] reusing {ckpt}", flush=True)
        model, _ = load_model(ckpt, read_run_config(run_dir), *read_checkpoint(ckpt))
        return model, run_datamodule(run_dir, args.data_dir)
    print(f"[{label}] training d=2 into {run_dir}", flush=True)
    extra = ["--model.latent_dim", "2", "--trainer.max_epochs", str(args.epochs)]
    if args.subset:
        extra += ["--data.subset", str(args.subset)]
    if label == "NeuroSQL":
        extra += ["--model.block_size", str(args.block_size)]
    result = fit(MODELS[label], run_dir, "mnist", args.data_dir, [*extra, *args.cli_args])
    return result.model.eval(), result.datamodule


@torch.no_grad()
def codes_of(model: Any, dm: Any, batch_size: int = 512) -> torch.Tensor:
    """(N, 2) code of every training image: NeuroSQL's latents row, the VAE's encoder mean."""
    if hasattr(model, "latents"):
        return model.latents[: dm.num_samples].detach().cpu().float()  # codes 0..N−1: copy 0 of each image
    out = []
    for start in range(0, dm.num_samples, batch_size):
        idx = torch.arange(start, min(start + batch_size, dm.num_samples))
        mu, _ = model.encode(dm.train_images(idx).float())
        out.append(mu)
    return torch.cat(out)


@torch.no_grad()
def reconstruction_mse(model: Any, dm: Any, codes: torch.Tensor, n: int = 2000) -> float:
    """Mean squared error, pixels in [-1, 1], of G(code) against the first n training images."""
    idx = torch.arange(min(n, dm.num_samples))
    return float((model(codes[idx]) - dm.train_images(idx).float()).square().mean())


def knn_accuracy(codes: torch.Tensor, labels: torch.Tensor, k: int = 10, n: int = 5000) -> float:
    """Leave-one-out k-NN digit accuracy from the codes, on the first n images (majority vote)."""
    z, y = codes[:n].double(), labels[:n]
    d = torch.cdist(z, z)
    d.fill_diagonal_(float("inf"))
    votes = y[d.topk(min(k, len(z) - 1), largest=False).indices]
    pred = torch.mode(votes, dim=1).values
    return float((pred == y).float().mean())


@torch.no_grad()
def decoded_grid(model: Any, side: int = 15) -> np.ndarray:
    """Images decoded at a side x side grid of N(0, 1) quantiles (5 %…95 %), as one uint8 image."""
    from neurosql_pl.images import image_grid

    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side))
    z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    return image_grid(model(z.to(model.device)).cpu(), nrow=side)


def figure(panels: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(5.5 * len(panels), 10.5), squeeze=False)
    for j, (label, p) in enumerate(panels.items()):
        ax = axes[0][j]
        z, y = p["codes"].numpy(), p["labels"].numpy()
        scatter = ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", s=2, vmin=-0.5, vmax=9.5, rasterized=True)
        ax.set_title(f"{label}: codes of {len(z):,} training images")
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        axes[1][j].imshow(p["grid"])
        axes[1][j].set_title(f"{label}: decoded over N(0,1) quantiles 5–95 %")
        axes[1][j].axis("off")
    fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(10), label="digit", shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label in MODELS:
        check_can_train(out / label.lower(), args.force)
    panels, summary, points = {}, [], []
    for label in MODELS:
        model, dm = trained(label, args, out / label.lower())
        model.eval()
        codes, labels = codes_of(model, dm), dm.train_labels()
        if codes.shape[1] != 2:
            raise ExperimentError(f"{label} in {out / label.lower()} has d={codes.shape[1]}, not 2; pass --force")
        panels[label] = {"codes": codes, "labels": labels, "grid": decoded_grid(model)}
        summary.append({
            "model": label, "N": len(codes), "knn10_accuracy": knn_accuracy(codes, labels),
            "mean_z1": float(codes[:, 0].mean()), "mean_z2": float(codes[:, 1].mean()),
            "std_z1": float(codes[:, 0].std()), "std_z2": float(codes[:, 1].std()),
            "recon_mse": reconstruction_mse(model, dm, codes),
        })
        points += [{"model": label, "index": i, "label": int(y), "z1": float(a), "z2": float(b)}
                   for i, (y, (a, b)) in enumerate(zip(labels.tolist(), codes.tolist()))]
    figure(panels, out / "latent2d.png")
    write_csv(points, out / "latent2d.csv")
    keys = ["model", "N", "knn10_accuracy", "mean_z1", "mean_z2", "std_z1", "std_z2", "recon_mse"]
    table = markdown_table(
        ["model", "N", "10-NN digit accuracy ↑", "mean z1", "mean z2", "std z1", "std z2", "recon MSE ↓"],
        [[r[k] for k in keys] for r in summary],
    )
    text = (f"MNIST, d = 2, {args.epochs} epochs; k-NN accuracy: leave-one-out over the first 5,000 codes; "
            f"reconstruction MSE over the first 2,000 images, pixels in [-1, 1].\n\n{table}\n")
    (out / "latent2d.md").write_text(text)
    print(text, flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(__doc__)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="runs/latent2d")
    p.add_argument("--subset", type=int, default=10000, help="first N MNIST training images (0 = all 60k)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--block-size", type=int, default=256, help="NeuroSQL's m (m ≥ N: one global assignment)")
    p.add_argument("--force", action="store_true", help="train both models again, replacing their folders")
    p.add_argument("cli_args", nargs="*", help="after --: extra LightningCLI flags for both fits")
    return p


def main(argv: list[str] | None = None) -> None:
    script_main(build_parser, run, argv)


if __name__ == "__main__":
    main()
