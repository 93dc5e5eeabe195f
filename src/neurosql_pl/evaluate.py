"""Evaluate a trained generative model: FID, KID, PRDC, pixel distances, memorisation, LPIPS/SSIM,
reconstructions and training time, written to ``eval.json`` and printed as a markdown table.

    neurosql evaluate --ckpt runs/mnist/checkpoints/last.ckpt [--n 1000] [--out eval.json]
        [--data-config experiments/configs/data/mnist.yaml] [--data-dir DIR] [--features inception|random-conv]

The command's options are the parameters of ``evaluate`` (``--help`` shows them with their
docs), spelt ``--data_config``, ``--use_cache false``, ``--baseline false``, …; the spellings
``--data-config``, ``--no-cache``, ``--no-baseline``, … are accepted as well.

The steps (one function each)
  load    ``load``: the model from the checkpoint (see ``run_folder.load_model``) and the data
          section: ``--data-config`` (a YAML with a ``data:`` section, e.g. the
          experiments/configs/data piece or a run's config.yaml), else the run folder's
          config.yaml, else the checkpoint's datamodule hyper-parameters. The run folder is the
          checkpoint's folder, or its parent when that is ``checkpoints/``.
  draw    ``draw``: the datamodule (``--data-dir`` overrides its data_dir); n_train = min(N, N_train)
          training images and n_test = min(N, N_test) held-out images (test split, else
          validation), both chosen at random with ``--seed`` (sorted); N samples from
          ``model.sample(n, generator=torch.Generator().manual_seed(seed))``.
  score   ``score_features``, ``score_pixels``, ``score_perceptual``, ``score_reconstructions``
          (the metrics themselves are in ``distribution_metrics`` and ``sample_metrics``):
       fid, kid_mean, kid_std, precision, recall, density, coverage
                                                        samples vs the held-out images (FID by
                                                        symmetric eigensolvers, --fid-method eigh,
                                                        ≈1 s on a CPU; torchmetrics: the same
                                                        value to ~1e-5, ≈5 s–1 min)
       baseline_*                                       the n_train training vs the held-out images
                                                        (what a perfect model would score)
       pixel_syn_to_train    mean over samples of the MSE to the nearest training image (all N_train)
       pixel_test_to_train   the same for the held-out images (its real-data baseline)
       pixel_train_to_syn    mean over the n_train training images of the MSE to the nearest sample
                             (large when modes are dropped)
       pixel_train_to_test   the same to the nearest held-out image (its baseline; same set sizes
                             when n_test = N)
       memorisation_*        sample_metrics.memorisation_check: median ratio syn→train / test→train,
                             flagged below --memorisation-threshold (0.5)
       lpips_syn_nn, ssim_syn_nn      LPIPS / SSIM of each sample and its nearest training image
       lpips_test_nn, ssim_test_nn    the same for the held-out images (baseline)
       recon_mse/psnr/ssim/lpips      reconstructions of the n_train training images, if the model
                                      has ``reconstruct`` (NeuroSQL: reconstruct(indices); others:
                                      reconstruct(images)); None otherwise
       train_epoch_time_s, train_total_time_s, train_epochs   from the run folder's metrics.json
  report  ``make_report``: eval.json, written atomically (default ``<run folder>/eval.json``);
          ``format_markdown``: the table the command prints.

The real images' Inception statistics are cached under ``~/.cache/neurosql_pl/fid_stats``
(``--cache-dir``, ``--no-cache``). The Inception network costs ≈0.16 s per image on a 2-core
CPU shared with a training job (its faster CPU path, ``features.cpu_inference_graph``; the
TorchScript as shipped: 0.26–0.29 s), so N = 1000 takes a few minutes for the
samples and, the first time, as long again for each real set. ``--features random-conv`` swaps
the Inception network for a small random conv net: fast, for tests and plumbing only, its
numbers are not meaningful.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .distribution_metrics import FID_METHODS, FidMethod, feature_metrics
from .features import (
    FEATURE_EXTRACTORS,
    FeatureName,
    FeatureStats,
    InceptionWeightsMissing,
    build_feature_extractor,
    extract_features,
    extractor_id,
    images_fingerprint,
    load_or_compute_real_stats,
    stats_cache_key,
)
from .files import write_json_atomic
from .generative_model import GenerativeModel
from .prior import check_truncation
from .run_folder import (
    EVAL_FILE,
    EvaluationError,
    build_datamodule,
    data_section,
    dataset_images,
    heldout_dataset,
    load_model,
    read_checkpoint,
    read_run_config,
    resolve_device,
    run_dir_of,
    training_times,
)
from .sample_metrics import memorisation_check, nearest_neighbours, paired_lpips, paired_ssim, reconstruction_metrics

__all__ = [
    "METRIC_KEYS",
    "Drawn",
    "EvaluationError",
    "LoadedRun",
    "build_parser",
    "draw",
    "draw_samples",
    "evaluate",
    "format_markdown",
    "load",
    "main",
    "make_report",
    "parse_options",
    "real_stats",
    "reconstruct_callable",
    "score_features",
    "score_perceptual",
    "score_pixels",
    "score_reconstructions",
]

#: every key of eval.json's "metrics" object (a value is None only where noted in the module doc)
METRIC_KEYS: tuple[str, ...] = (
    "fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
    "baseline_fid", "baseline_kid_mean", "baseline_kid_std",
    "baseline_precision", "baseline_recall", "baseline_density", "baseline_coverage",
    "pixel_syn_to_train", "pixel_test_to_train", "pixel_train_to_syn", "pixel_train_to_test",
    "memorisation_ratio", "memorisation_frac_close", "memorisation_flag",
    "lpips_syn_nn", "ssim_syn_nn", "lpips_test_nn", "ssim_test_nn",
    "recon_mse", "recon_psnr", "recon_ssim", "recon_lpips",
    "train_epoch_time_s", "train_total_time_s", "train_epochs",
)

#: --reference: what the samples are scored against → how eval.json's settings.fid_reference names it
REFERENCES: dict[str, str] = {"heldout": "held-out images", "train": "training images"}

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- load


@dataclass
class LoadedRun:
    """What the load step reads: the model (eval mode, on ``device``) and where its data is."""

    ckpt: Path
    run_dir: Path
    model: Any
    class_path: str
    data: dict[str, Any]  # the data section {class_path, init_args}
    data_source: str
    device: torch.device


def load(ckpt: str | os.PathLike[str], data_config: str | os.PathLike[str] | None = None,
         device: str = "auto") -> LoadedRun:
    """The model of ``ckpt`` on ``device`` ("auto": cuda if available) and its data section."""
    ckpt = Path(ckpt)
    checkpoint, weights_only = read_checkpoint(ckpt)
    run_dir = run_dir_of(ckpt)
    run_config = read_run_config(run_dir)
    section, data_source = data_section(data_config or None, run_config, checkpoint)
    model, class_path = load_model(ckpt, run_config, checkpoint, weights_only)
    del checkpoint
    dev = resolve_device(device)
    return LoadedRun(ckpt, run_dir, model.to(dev), class_path, section, data_source, dev)


# ----------------------------------------------------------------------------- draw


@dataclass
class Drawn:
    """The images the score step compares, each (n, C, H, W) float32 on the CPU in [-1, 1]."""

    dm: Any  # the set-up datamodule: its train_images(indices) serve the nearest-neighbour searches
    samples: Tensor
    train: Tensor  # the chosen training images, at train_idx
    train_idx: Tensor
    heldout: Tensor  # the chosen held-out images
    n_train_total: int
    n_heldout_total: int
    sample_s: float


def _choose(n_total: int, n: int, generator: torch.Generator) -> Tensor:
    if n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=generator)[:n].sort().values


@torch.no_grad()
def draw_samples(model: Any, n: int, seed: int, batch_size: int, truncation: float | None = None) -> Tensor:
    """n samples in batches, one seeded CPU generator for all of them: (n, C, H, W) on the CPU.
    ``truncation``: the prior's truncation (``prior.sample_prior``); None draws from N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if truncation is not None:
        if "truncation" not in inspect.signature(model.sample).parameters:
            raise EvaluationError(f"{type(model).__name__} does not sample from a latent prior; --truncation applies "
                                  "to NeuroSQL, the VAE and the GAN only")
        kwargs["truncation"] = truncation
    out = []
    for s in range(0, n, batch_size):
        x = model.sample(min(batch_size, n - s), generator=generator, **kwargs)
        out.append(x.detach().float().cpu())
    samples = torch.cat(out)
    if not torch.isfinite(samples).all():
        raise EvaluationError("the model produced non-finite samples")
    return samples.clamp(-1.0, 1.0)


def draw(model: Any, dm: Any, n: int, seed: int, batch_size: int, truncation: float | None = None,
         reference: str = "heldout") -> Drawn:
    """N samples of the model, and up to N training and N held-out images of ``dm`` chosen with ``seed``.
    ``reference`` "train": the 'held-out' images are training images instead, others than the chosen
    training images where there are enough (for runs that held none out)."""
    n_train_total = int(dm.num_samples)
    chooser = torch.Generator().manual_seed(seed)
    train_idx = _choose(n_train_total, n, chooser)
    if reference == "train":
        rest = torch.ones(n_train_total, dtype=torch.bool)
        rest[train_idx] = False
        pool = rest.nonzero().squeeze(1) if rest.any() else torch.arange(n_train_total)
        test_idx = pool[_choose(len(pool), n, chooser)]
        x_test, n_heldout_total = dm.train_images(test_idx).float(), len(pool)
    else:
        held = heldout_dataset(dm)
        test_idx = _choose(len(held), n, chooser)
        x_test, n_heldout_total = dataset_images(held, test_idx), len(held)
    x_train = dm.train_images(train_idx).float()
    t0 = time.perf_counter()
    samples = draw_samples(model, n, seed, batch_size, truncation)
    sample_s = time.perf_counter() - t0
    if samples.shape[1:] != x_test.shape[1:] or x_train.shape[1:] != x_test.shape[1:]:
        raise EvaluationError(
            f"image shapes differ: samples {tuple(samples.shape[1:])}, training images {tuple(x_train.shape[1:])}, "
            f"held-out images {tuple(x_test.shape[1:])}; evaluate with the data the model was trained on"
        )
    return Drawn(dm, samples, x_train, train_idx, x_test, n_train_total, n_heldout_total, sample_s)


# ----------------------------------------------------------------------------- score


def real_stats(
    images: Tensor, split: str, extractor: nn.Module, dataset_name: str, batch_size: int,
    cache_dir: str | os.PathLike[str] | None, use_cache: bool, say: Log,
) -> tuple[FeatureStats, bool]:
    """The feature statistics of real images, from the cache when there (and ``use_cache``)."""

    def compute() -> Tensor:
        say(f"features of {images.shape[0]} {split} images ({extractor_id(extractor)})")
        return extract_features(extractor, images, batch_size)

    if not use_cache:
        return FeatureStats.from_features(compute()), False
    key = stats_cache_key(dataset_name, split, tuple(images.shape[1:]), images.shape[0], extractor,
                          images_fingerprint(images))
    return load_or_compute_real_stats(key, compute, cache_dir)


def score_features(
    drawn: Drawn, extractor: nn.Module, dataset_name: str, scoring: dict[str, Any], baseline: bool,
    batch_size: int, cache_dir: str | os.PathLike[str] | None, use_cache: bool, say: Log,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """FID, KID and PRDC of the samples against the held-out images (and, with ``baseline``,
    baseline_*: of the training images). ``scoring``: the keyword arguments of
    ``distribution_metrics.feature_metrics``. Returns (metrics, {kid_subset_size, features_s,
    real_stats_from_cache})."""
    n = drawn.samples.shape[0]
    t0 = time.perf_counter()
    f_syn = extract_features(extractor, drawn.samples, batch_size)
    features_s = time.perf_counter() - t0
    say(f"features of {n} samples in {features_s:.1f} s ({features_s / n:.3f} s per image)")
    cached: dict[str, bool] = {}
    real = {"cache_dir": cache_dir, "use_cache": use_cache, "say": say, "batch_size": batch_size}
    test_stats, cached["test"] = real_stats(drawn.heldout, "test", extractor, dataset_name, **real)
    metrics = feature_metrics(test_stats, f_syn, **scoring)
    info = {"kid_subset_size": metrics.pop("kid_subset_size"), "features_s": features_s, "real_stats_from_cache": cached}
    if baseline:
        train_stats, cached["train"] = real_stats(drawn.train, "train", extractor, dataset_name, **real)
        base = feature_metrics(test_stats, train_stats.features, **scoring)
        base.pop("kid_subset_size")
        metrics.update({f"baseline_{k}": v for k, v in base.items()})
    else:
        metrics.update({k: None for k in METRIC_KEYS if k.startswith("baseline_")})
    return metrics, info


def _train_blocks(dm: Any, n_train: int, block: int = 4096) -> Iterator[Tensor]:
    for s in range(0, n_train, block):
        yield dm.train_images(torch.arange(s, min(s + block, n_train)))


def score_pixels(drawn: Drawn, threshold: float, device: torch.device, say: Log) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Nearest-neighbour pixel distances both ways and the memorisation check. Returns (metrics,
    index of each sample's nearest training image, the same for each held-out image)."""
    n, n_test = drawn.samples.shape[0], drawn.heldout.shape[0]
    say(f"nearest training images (of {drawn.n_train_total}) for {n} samples and {n_test} held-out images")
    queries = torch.cat([drawn.samples, drawn.heldout])
    d_all, nn_all = nearest_neighbours(queries, _train_blocks(drawn.dm, drawn.n_train_total), device=device)
    d_syn, d_test = d_all[:n], d_all[n:]
    d_train_syn, _ = nearest_neighbours(drawn.train, drawn.samples, device=device)
    d_train_test, _ = nearest_neighbours(drawn.train, drawn.heldout, device=device)
    mem = memorisation_check(d_syn, d_test, threshold=threshold)
    metrics = {
        "pixel_syn_to_train": float(d_syn.mean()),
        "pixel_test_to_train": float(d_test.mean()),
        "pixel_train_to_syn": float(d_train_syn.mean()),
        "pixel_train_to_test": float(d_train_test.mean()),
        "memorisation_ratio": mem["ratio"],
        "memorisation_frac_close": mem["frac_close"],
        "memorisation_flag": mem["flag"],
    }
    return metrics, nn_all[:n], nn_all[n:]


def score_perceptual(drawn: Drawn, nn_syn: Tensor, nn_test: Tensor, lpips_net: nn.Module, batch_size: int) -> dict[str, float]:
    """LPIPS and SSIM of each sample (held-out image) and its nearest training image."""
    metrics = {}
    for name, x, nn_idx in (("syn", drawn.samples, nn_syn), ("test", drawn.heldout, nn_test)):
        neighbours = drawn.dm.train_images(nn_idx).float()
        metrics[f"lpips_{name}_nn"] = float(paired_lpips(x, neighbours, lpips_net, batch_size).mean())
        metrics[f"ssim_{name}_nn"] = float(paired_ssim(x, neighbours).mean())
    return metrics


def reconstruct_callable(model: Any) -> Callable[[Tensor, Tensor], Tensor] | None:
    """The model's reconstructions as (images, indices) → images on the CPU, from what the model
    says it reconstructs from (``GenerativeModel.reconstructs_from``: NeuroSQL its codes of the
    indices, the VAE the images); None when it does not reconstruct."""
    if not isinstance(model, GenerativeModel) or model.reconstructs_from is None:
        return None

    def call(x: Tensor, i: Tensor) -> Tensor:
        with torch.no_grad():
            return model.reconstruct_training(x, i).float().cpu()

    return call


def score_reconstructions(model: Any, drawn: Drawn, lpips_net: nn.Module, batch_size: int, say: Log) -> dict[str, Any]:
    """recon_mse / psnr / ssim / lpips of the chosen training images; None when the model cannot
    reconstruct them."""
    recon: dict[str, Any] = {"mse": None, "psnr": None, "ssim": None, "lpips": None}
    fn = reconstruct_callable(model)
    if fn is not None and model.reconstructs_from == "indices" and model.num_samples != drawn.n_train_total:
        say(f"skipping reconstructions: the model holds codes for N={model.num_samples} images, "
            f"the data has {drawn.n_train_total}")
        fn = None
    if fn is not None:
        try:
            recon = reconstruction_metrics(fn, drawn.train, drawn.train_idx, lpips_net, batch_size)
        except Exception as err:  # noqa: BLE001 - an unusual reconstruct() must not sink the evaluation
            warnings.warn(f"reconstruction metrics skipped: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
    return {f"recon_{k}": v for k, v in recon.items()}


def _training_time_metrics(run_dir: Path) -> dict[str, Any]:
    times = training_times(run_dir)
    return {"train_epoch_time_s": times["epoch_time_s"], "train_total_time_s": times["total_time_s"],
            "train_epochs": times["epochs"]}


# ----------------------------------------------------------------------------- report


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_report(run: LoadedRun, drawn: Drawn, settings: dict[str, Any], metrics: dict[str, Any],
                timing: dict[str, Any]) -> dict[str, Any]:
    """eval.json's content: where the model and data came from, the settings, every metric of
    METRIC_KEYS (non-finite values as None) and the timing."""
    return {
        "checkpoint": str(run.ckpt.resolve()),
        "run_dir": str(run.run_dir),
        "model_class": run.class_path,
        "datamodule_class": run.data["class_path"],
        "data_source": run.data_source,
        "settings": {
            "n_samples": int(drawn.samples.shape[0]),
            "n_train_images": int(drawn.train.shape[0]),
            "n_heldout_images": int(drawn.heldout.shape[0]),
            "n_train_reference": drawn.n_train_total,
            **settings,
            "device": str(run.device),
            "fid_reference": REFERENCES[settings.get("reference", "heldout")],
        },
        "metrics": {k: _finite_or_none(metrics.get(k)) for k in METRIC_KEYS},
        "timing": timing,
    }


def _fmt(value: Any, scale: float = 1.0, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value * scale:.{digits}g}"


def format_markdown(report: dict[str, Any]) -> str:
    """A markdown table of eval.json's metrics: model, real-data baseline, direction."""
    m = report["metrics"]
    s = report["settings"]
    rows = [
        ("FID", "fid", "baseline_fid", 1.0, "↓"),
        ("KID ×10³", "kid_mean", "baseline_kid_mean", 1e3, "↓"),
        ("precision", "precision", "baseline_precision", 1.0, "↑"),
        ("recall", "recall", "baseline_recall", 1.0, "↑"),
        ("density", "density", "baseline_density", 1.0, "≈1"),
        ("coverage", "coverage", "baseline_coverage", 1.0, "↑"),
        ("pixel MSE to nearest training image", "pixel_syn_to_train", "pixel_test_to_train", 1.0, "≈ baseline"),
        ("pixel MSE training → nearest sample", "pixel_train_to_syn", "pixel_train_to_test", 1.0, "↓ (mode dropping)"),
        ("LPIPS to nearest training image", "lpips_syn_nn", "lpips_test_nn", 1.0, "≈ baseline"),
        ("SSIM to nearest training image", "ssim_syn_nn", "ssim_test_nn", 1.0, "≈ baseline"),
    ]
    lines = [
        f"Evaluation of `{report['checkpoint']}` ({report['model_class']}), N = {s['n_samples']} samples, "
        f"{s['n_heldout_images']} held-out and {s['n_train_images']} training images, features: {s['feature_extractor_id']}",
        *([f"**Scored against {s['fid_reference']}**, not held-out ones: a model that copies its training images "
           "scores well here."] if s.get("reference") == "train" else []),
        "",
        "| metric | model | real data (train vs held-out) | better |",
        "|---|---|---|---|",
    ]
    for label, key, base, scale, better in rows:
        lines.append(f"| {label} | {_fmt(m[key], scale)} | {_fmt(m[base], scale)} | {better} |")
    lines.append(
        f"| memorisation: median ratio syn→train / held-out→train | {_fmt(m['memorisation_ratio'])} "
        f"({'FLAGGED' if m['memorisation_flag'] else 'not flagged'}, threshold {s['memorisation_threshold']}) | 1 | ≈1 |"
    )
    for label, key, better in (("reconstruction MSE", "recon_mse", "↓"), ("reconstruction PSNR (dB)", "recon_psnr", "↑"),
                               ("reconstruction SSIM", "recon_ssim", "↑"), ("reconstruction LPIPS", "recon_lpips", "↓"),
                               ("training time per epoch (s)", "train_epoch_time_s", ""),
                               ("training time total (s)", "train_total_time_s", ""), ("epochs", "train_epochs", "")):
        lines.append(f"| {label} | {_fmt(m[key])} | | {better} |")
    if s["features"] != "inception":
        lines.append("")
        lines.append(f"Features: {s['features']} — for plumbing tests only; FID/KID/PRDC values are not meaningful.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluate


def _check_options(n: int, prdc_k: int, fid_method: str, features: str, truncation: float | None,
                   reference: str) -> None:
    if reference not in REFERENCES:
        raise EvaluationError(f"unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")
    if n < max(prdc_k + 1, 2):
        raise EvaluationError(f"n must be at least {max(prdc_k + 1, 2)} (PRDC uses k={prdc_k} neighbours), got {n}")
    if fid_method not in FID_METHODS:
        raise EvaluationError(f"unknown fid_method {fid_method!r}; choose one of {', '.join(FID_METHODS)}")
    if features not in FEATURE_EXTRACTORS:
        raise EvaluationError(f"unknown --features {features!r}; choose one of {', '.join(FEATURE_EXTRACTORS)}")
    try:
        check_truncation(truncation)
    except ValueError as err:
        raise EvaluationError(str(err)) from err


def evaluate(
    ckpt: str | os.PathLike[str],
    n: int = 1000,
    out: str | os.PathLike[str] | None = None,
    data_config: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    features: FeatureName = "inception",
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    prdc_k: int = 5,
    perceptual: str = "stlpips-alex",
    memorisation_threshold: float = 0.5,
    baseline: bool = True,
    fid_method: FidMethod = "eigh",
    truncation: float | None = None,
    reference: Literal["heldout", "train"] = "heldout",
    extractor: nn.Module | None = None,
    log: Log | None = print,
) -> dict[str, Any]:
    """Score a trained generative model (FID, KID, PRDC, pixel distances, memorisation,
    LPIPS/SSIM, reconstructions, training time); write eval.json and return its content.

    Args:
        ckpt: Lightning checkpoint, e.g. runs/mnist/checkpoints/last.ckpt.
        n: number of samples N (and at most N training and N held-out images).
        out: eval.json path (default: <run folder>/eval.json; with ``truncation`` t,
            <run folder>/eval_truncation<t>.json).
        data_config: YAML with a data: section (experiments/configs/data/<name>.yaml or a run's
            config.yaml); default: the run folder's config.yaml, else the checkpoint's
            datamodule hyper-parameters.
        data_dir: override the datamodule's data_dir.
        features: feature network for FID/KID/PRDC: inception (TF-FID Inception) or random-conv
            (a small random conv net for tests and plumbing; its values are NOT meaningful).
        seed: seeds the samples, the choice of real images and KID's subsets.
        device: auto (cuda if available), cpu, cuda, cuda:1, ...
        batch_size: images per network pass (sampling, features, LPIPS).
        cache_dir: real-statistics cache (default ~/.cache/neurosql_pl/fid_stats).
        use_cache: read and write the real-statistics cache (false: neither).
        kid_subset_size: KID subset size (default min(1000, N/2)); larger than the sets: clamped,
            with a warning.
        kid_subsets: number of KID subsets.
        prdc_k: k of the PRDC k-NN balls.
        perceptual: LPIPS backend (perceptual.PERCEPTUAL_NAMES; stlpips-alex runs offline).
        memorisation_threshold: flag memorisation when median(syn→train) / median(held-out→train)
            is below this.
        baseline: also score the training images against the held-out ones (N more feature
            passes the first time; cached afterwards).
        fid_method: eigh (default: symmetric eigensolvers, ≈1 s per FID at D=2048 on a 2-core
            CPU) or torchmetrics (≈5 s–1 min; the same value to ~1e-5 relative, e.g. 33.8144 vs
            33.8142 on 2×200 MNIST images; see distribution_metrics.frechet_distance).
        truncation: draw the samples' codes from N(0, I) truncated to |z_j| ≤ truncation
            (NeuroSQL, VAE, GAN; see prior.sample_prior); null: the plain prior.
        reference: what the samples are scored against: heldout (the test split, else the
            validation split) or train (training images other than the n_train chosen ones, for
            a run that held none out; labelled in eval.json and the table).
        extractor: a feature module to use instead of ``features`` (Python callers only): images
            (B, C, H, W) in [-1, 1] → (B, D); its ``id`` keys the cache.
        log: progress messages (None: silent).
    """
    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    _check_options(n, prdc_k, fid_method, features, truncation, reference)
    run = load(ckpt, data_config, device)
    say(f"model {run.class_path} from {run.ckpt}; data {run.data['class_path']} ({run.data_source}); device {run.device}")

    drawn = draw(run.model, build_datamodule(run.data, data_dir), n, seed, batch_size, truncation, reference)
    say(f"{n} samples in {drawn.sample_s:.1f} s; {drawn.train.shape[0]} training and {drawn.heldout.shape[0]} "
        f"held-out images (of {drawn.n_train_total} and {drawn.n_heldout_total})")

    if extractor is None:
        try:
            extractor = build_feature_extractor(features)
        except InceptionWeightsMissing as err:
            raise EvaluationError(str(err)) from err
        features_name = features
    else:
        features_name = extractor_id(extractor)
    extractor = extractor.to(run.device)
    scoring = {"kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets, "prdc_k": prdc_k, "seed": seed,
               "fid_method": fid_method}
    metrics, info = score_features(drawn, extractor, run.data["class_path"].rpartition(".")[2], scoring, baseline,
                                   batch_size, cache_dir, use_cache, say)
    pixel, nn_syn, nn_test = score_pixels(drawn, memorisation_threshold, run.device, say)
    metrics.update(pixel)
    from .perceptual import build_perceptual

    lpips_net = build_perceptual(perceptual).to(run.device)
    metrics.update(score_perceptual(drawn, nn_syn, nn_test, lpips_net, batch_size))
    metrics.update(score_reconstructions(run.model, drawn, lpips_net, batch_size, say))
    metrics.update(_training_time_metrics(run.run_dir))

    settings = {"features": features_name, "feature_extractor_id": extractor_id(extractor),
                "kid_subset_size": info["kid_subset_size"], "kid_subsets": kid_subsets, "fid_method": fid_method,
                "prdc_k": prdc_k, "perceptual": perceptual, "memorisation_threshold": memorisation_threshold,
                "seed": seed, "truncation": truncation, "reference": reference}
    timing = {"sample_s": drawn.sample_s, "features_s": info["features_s"], "features_s_per_image": info["features_s"] / n,
              "real_stats_from_cache": info["real_stats_from_cache"], "eval_total_s": time.perf_counter() - t_start}
    report = make_report(run, drawn, settings, metrics, timing)
    out_path = Path(out) if out is not None else run.run_dir / (
        EVAL_FILE if truncation is None else f"eval_truncation{truncation:g}.json")
    write_json_atomic(report, out_path)
    report["eval_json"] = str(out_path)
    return report


# ----------------------------------------------------------------------------- CLI

#: the command's flags are evaluate's parameters but these (Python callers only)
_NOT_FLAGS = {"extractor", "log"}
#: on/off flags of the argparse command this replaced, as jsonargparse spells them
_SWITCHES = {"--no-cache": "--use_cache=false", "--no-baseline": "--baseline=false"}


def build_parser():
    """The command's parser: one option per parameter of ``evaluate`` (commands.py), plus ``--quiet``."""
    from .commands import function_parser

    parser = function_parser(
        evaluate, "neurosql evaluate", evaluate.__doc__.split("\n\n")[0] + " The table goes to stdout, progress "
        "to stderr. Earlier spellings work too: --data-config, --no-cache, --no-baseline, --fid-method, ...",
        skip=_NOT_FLAGS,
    )
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    return parser


def parse_options(argv: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments of ``evaluate`` (and ``quiet``) from a command line, in its jsonargparse
    or its earlier argparse spelling; exits with status 2 and one 'error: …' line when it is wrong."""
    from .commands import parse_command_line

    return parse_command_line(build_parser(), argv, _SWITCHES)


def command(argv: Sequence[str]) -> int:
    """``neurosql evaluate …``: the table to stdout, where eval.json went to stderr (status 0). An
    EvaluationError propagates: `neurosql` prints it as one 'error: …' line (status 1)."""
    options = parse_options(argv)
    log = None if options.pop("quiet") else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = evaluate(**options, log=log)
    print(format_markdown(report))
    print(f"\nwrote {report['eval_json']}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The earlier spellings ``python -m neurosql_pl.evaluate …`` and ``neurosql-evaluate …``, the
    same as ``neurosql evaluate …``: the exit status."""
    from .commands import run_command

    return run_command(command, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
