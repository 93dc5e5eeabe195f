"""Paths of the repository and CLI argument lists for small, fast fits with the project's configs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"


def tiny_fit_args(data_dir: Path, run_dir: Path, lattice_dir: Path, *extra: str) -> list[str]:
    """CLI arguments for a small, fast `fit` on tiny MNIST with the project's own config pieces."""
    return [
        "fit",
        "--config", str(CONFIGS / "trainer" / "default.yaml"),
        "--config", str(CONFIGS / "model" / "neurosql_lpips.yaml"),
        "--config", str(CONFIGS / "data" / "mnist.yaml"),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
        "--data.data_dir", str(data_dir),
        "--data.batch_size", "16",
        "--data.download", "false",
        "--model.block_size", "16",
        "--model.generator_width", "8",
        "--model.lattice_cache_dir", str(lattice_dir),
        *extra,
    ]


def baseline_fit_args(model: str, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """CLI arguments for a one-epoch `fit` of a baseline (vae, gan or ddpm) on tiny MNIST with the
    project's config pieces, its networks made tiny, no logger."""
    tiny = {
        "vae": ["--model.generator_width", "8"],
        "gan": ["--model.generator_width", "8"],
        "ddpm": ["--model.param_budget", "null", "--model.width", "8", "--model.timesteps", "20", "--model.sample_steps", "4"],
    }[model]
    return [
        "fit",
        "--config", str(CONFIGS / "trainer" / "default.yaml"),
        "--config", str(CONFIGS / "model" / f"{model}.yaml"),
        "--config", str(CONFIGS / "data" / "mnist.yaml"),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--data.data_dir", str(data_dir),
        "--data.batch_size", "16",
        "--data.download", "false",
        *tiny,
        *extra,
    ]
