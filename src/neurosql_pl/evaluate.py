"""Evaluate a trained generative model: FID, KID, PRDC, pixel distances, memorisation, LPIPS/SSIM,
reconstructions and training time, written to ``eval.json`` and printed as a markdown table.

    python -m neurosql_pl.evaluate --ckpt runs/mnist/checkpoints/last.ckpt [--n 1000] [--out eval.json]
        [--data-config experiments/configs/data/mnist.yaml] [--data-dir DIR] [--features inception|random-conv]

What it does
  1. Loads the model: the class is ``model.class_path`` of the run folder's ``config.yaml`` (the
     run folder is the checkpoint's folder, or its parent when that is ``checkpoints/``), else the
     checkpoint's own ``hyper_parameters._class_path``, else ``neurosql_pl.NeuroSQL``; then
     ``Class.load_from_checkpoint``.
  2. Builds the datamodule from ``--data-config`` (a YAML with a ``data:`` section, e.g. the
     experiments/configs/data piece or a run's config.yaml), else the run folder's config.yaml,
     else the checkpoint's datamodule hyper-parameters; ``--data-dir`` overrides its data_dir.
     Real images: n_train = min(N, N_train) training images and n_test = min(N, N_test) held-out
     images (test split, else validation), both drawn at random with ``--seed`` (sorted).
  3. Draws N samples with ``model.sample(n, generator=torch.Generator().manual_seed(seed))``.
  4. Computes (see ``neurosql_pl.metrics``):
       fid, kid_mean, kid_std, precision, recall, density, coverage
                                                        samples vs the held-out images (FID by
                                                        torchmetrics, or --fid-method eigh: same
                                                        value, ≈1 s instead of ≈1 min on a CPU)
       baseline_*                                       the n_train training vs the held-out images
                                                        (what a perfect model would score)
       pixel_syn_to_train    mean over samples of the MSE to the nearest training image (all N_train)
       pixel_test_to_train   the same for the held-out images (its real-data baseline)
       pixel_train_to_syn    mean over the n_train training images of the MSE to the nearest sample
                             (large when modes are dropped)
       pixel_train_to_test   the same to the nearest held-out image (its baseline; same set sizes
                             when n_test = N)
       memorisation_*        metrics.memorisation_check: median ratio syn→train / test→train,
                             flagged below --memorisation-threshold (0.5)
       lpips_syn_nn, ssim_syn_nn      LPIPS / SSIM of each sample and its nearest training image
       lpips_test_nn, ssim_test_nn    the same for the held-out images (baseline)
       recon_mse/psnr/ssim/lpips      reconstructions of the n_train training images, if the model
                                      has ``reconstruct`` (NeuroSQL: reconstruct(indices); others:
                                      reconstruct(images)); None otherwise
       train_epoch_time_s, train_total_time_s, train_epochs   from the run folder's metrics.json
  5. Writes eval.json atomically (default ``<run folder>/eval.json``) and prints a markdown table.

The real images' Inception statistics are cached under ``~/.cache/neurosql_pl/fid_stats``
(``--cache-dir``, ``--no-cache``). The Inception network costs ≈0.14 s per image on an idle
2-core CPU and 0.3–0.4 s when the cores are shared, so N = 1000 takes a few minutes for the
samples and, the first time, as long again for each real set. ``--features random-conv`` swaps
the Inception network for a small random conv net: fast, for tests and plumbing only, its
numbers are not meaningful.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import metrics as M
from .files import write_json_atomic

__all__ = ["EvaluationError", "evaluate", "format_markdown", "main", "METRIC_KEYS"]

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


class EvaluationError(RuntimeError):
    """A checkpoint, config or dataset problem that stops the evaluation (message says what to do)."""


# ----------------------------------------------------------------------------- loading


def run_dir_of(ckpt: Path) -> Path:
    """The run folder: the checkpoint's folder, or its parent when that folder is ``checkpoints``."""
    parent = ckpt.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    if not module:
        raise EvaluationError(f"class path {class_path!r} is not of the form 'package.module.Class'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise EvaluationError(f"cannot import {class_path!r}: {type(err).__name__}: {err}") from err


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise EvaluationError(f"cannot read config {path}: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise EvaluationError(f"config {path} is not a YAML mapping")
    return data


def read_checkpoint(ckpt: Path) -> tuple[dict[str, Any], bool]:
    """Load a checkpoint dict on the CPU (weights-only when possible). Returns (checkpoint,
    weights_only used). Raises EvaluationError for a missing, unreadable or corrupt file."""
    if not ckpt.exists():
        raise EvaluationError(f"checkpoint not found: {ckpt}")
    if not ckpt.is_file():
        raise EvaluationError(f"checkpoint {ckpt} is not a file")
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True), True
    except Exception as first:  # noqa: BLE001
        if "weights_only" not in str(first).lower() and "weights only" not in str(first).lower():
            raise EvaluationError(
                f"cannot read checkpoint {ckpt} ({type(first).__name__}: {str(first).strip()[:300]}); "
                "the file is truncated or corrupt. Use another checkpoint (e.g. checkpoints/last.ckpt "
                "or the epoch=… file beside it)"
            ) from first
    try:  # a checkpoint with non-tensor objects: full unpickling (only for files you trust)
        return torch.load(ckpt, map_location="cpu", weights_only=False), False
    except Exception as err:  # noqa: BLE001
        raise EvaluationError(f"cannot read checkpoint {ckpt} ({type(err).__name__}: {err}); the file is corrupt") from err


def load_model(ckpt: Path, run_config: dict[str, Any] | None, checkpoint: dict[str, Any], weights_only: bool):
    """The LightningModule of ``ckpt``, in eval mode on the CPU."""
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = (
        ((run_config or {}).get("model") or {}).get("class_path")
        or hparams.get("_class_path")
        or "neurosql_pl.NeuroSQL"
    )
    cls = _import(class_path)
    if "state_dict" not in checkpoint:
        raise EvaluationError(f"{ckpt} holds no 'state_dict': it is not a Lightning checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001
        raise EvaluationError(f"cannot build {class_path} from {ckpt}: {type(err).__name__}: {err}") from err
    if not callable(getattr(model, "sample", None)):
        raise EvaluationError(f"{class_path} has no sample(n, generator) method; evaluate needs one")
    model.eval()
    return model, class_path


def data_section(
    data_config: Path | None, run_config: dict[str, Any] | None, checkpoint: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """(the ``data`` section {class_path, init_args}, where it came from)."""
    if data_config is not None:
        section = _read_yaml(data_config).get("data")
        if not isinstance(section, dict) or "class_path" not in section:
            raise EvaluationError(f"{data_config} has no 'data: {{class_path: …, init_args: …}}' section")
        return section, str(data_config)
    if run_config and isinstance(run_config.get("data"), dict) and "class_path" in run_config["data"]:
        return run_config["data"], "run config.yaml"
    dm_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    if "_class_path" in dm_hparams:
        class_path = dm_hparams.pop("_class_path")
        init_args = {k: v for k, v in dm_hparams.items() if not k.startswith("_")}
        return {"class_path": class_path, "init_args": init_args}, "checkpoint datamodule hyper-parameters"
    raise EvaluationError(
        "no data configuration: the run folder has no config.yaml and the checkpoint no datamodule "
        "hyper-parameters; pass --data-config experiments/configs/data/<name>.yaml"
    )


def build_datamodule(section: dict[str, Any], data_dir: str | None):
    """Instantiate, prepare and set up the datamodule of a ``data`` config section."""
    cls = _import(section["class_path"])
    init_args = dict(section.get("init_args") or {})
    if data_dir is not None:
        init_args["data_dir"] = data_dir
    try:
        dm = cls(**init_args)
        dm.prepare_data()
        dm.setup("fit")
    except EvaluationError:
        raise
    except Exception as err:  # noqa: BLE001 - DatasetNotFoundError etc.: keep their message
        raise EvaluationError(f"cannot load the data ({section['class_path']}): {type(err).__name__}: {err}") from err
    if not hasattr(dm, "train_images"):
        raise EvaluationError(f"{section['class_path']} has no train_images(indices); evaluate needs one")
    return dm


def heldout_dataset(dm) -> torch.utils.data.Dataset:
    """The test split's dataset, else the validation split's (items (image, index) or image)."""
    for stage in ("fit", "test"):  # datamodules that build the test split only in setup("test")
        if stage == "test":
            try:
                dm.setup("test")
            except Exception:  # noqa: BLE001
                break
        for name in ("test_dataloader", "val_dataloader"):
            try:
                dataset = getattr(getattr(dm, name)(), "dataset", None)
            except Exception:  # noqa: BLE001 - no such split
                continue
            if dataset is not None and len(dataset) > 0:
                return dataset
    raise EvaluationError(f"{type(dm).__name__} has no test or validation images for the held-out set")


def _image_of(item: Any) -> Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def dataset_images(dataset, indices: Tensor, batch_size: int = 256) -> Tensor:
    """Images of ``dataset`` at ``indices`` as one float32 tensor (n, C, H, W)."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False)
    return torch.cat([_image_of(batch).float() for batch in loader])


def _choose(n_total: int, n: int, generator: torch.Generator) -> Tensor:
    if n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=generator)[:n].sort().values


def _train_blocks(dm, n_train: int, block: int = 4096) -> Iterator[Tensor]:
    for s in range(0, n_train, block):
        yield dm.train_images(torch.arange(s, min(s + block, n_train)))


@torch.no_grad()
def draw_samples(model, n: int, seed: int, batch_size: int) -> Tensor:
    """n samples in batches, one seeded CPU generator for all of them: (n, C, H, W) on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, n, batch_size):
        x = model.sample(min(batch_size, n - s), generator=generator)
        out.append(x.detach().float().cpu())
    samples = torch.cat(out)
    if not torch.isfinite(samples).all():
        raise EvaluationError("the model produced non-finite samples")
    return samples.clamp(-1.0, 1.0)


def reconstruct_callable(model) -> Callable[[Tensor, Tensor], Tensor] | None:
    """Adapt the model's reconstruction method to (images, indices) → images; None if it has none.

    ``reconstruct_images(x)`` is used when the model has it (autoencoders); else
    ``reconstruct``: a first parameter named idx / indices / index takes dataset indices
    (NeuroSQL reconstructs G(Ẑ_i)), any other name takes the images."""
    method = getattr(model, "reconstruct_images", None)
    by_index = False
    if not callable(method):
        method = getattr(model, "reconstruct", None)
        if not callable(method):
            return None
        params = [p for p in inspect.signature(method).parameters.values() if p.kind != p.VAR_KEYWORD]
        by_index = bool(params) and params[0].name in ("idx", "indices", "index")
    device = next(iter(model.parameters()), torch.empty(0)).device

    def call(x: Tensor, i: Tensor) -> Tensor:
        with torch.no_grad():
            return method(i.to(device) if by_index else x.to(device)).float().cpu()

    return call


# ----------------------------------------------------------------------------- evaluation


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    ckpt: str | os.PathLike[str],
    n: int = 1000,
    out: str | os.PathLike[str] | None = None,
    data_config: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    features: str | torch.nn.Module = "inception",
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
    fid_method: str = "torchmetrics",
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Evaluate a checkpoint (see the module doc); write eval.json and return its content.

    Args:
        ckpt: the Lightning checkpoint.
        n: number of samples N (and at most N training / held-out images).
        out: eval.json path (default ``<run folder>/eval.json``).
        data_config / data_dir: where the data comes from (see the module doc).
        features: "inception" (TF-FID Inception), "random-conv" (tests/plumbing only), or any
            feature module (images (B, C, H, W) in [-1, 1] → (B, D); its ``id`` keys the cache).
        seed: seeds the samples, the choice of real images and KID's subsets.
        device: "auto" (cuda if available), "cpu", "cuda", ...
        batch_size: images per network pass (sampling, features, LPIPS).
        cache_dir / use_cache: the real-statistics cache (default ~/.cache/neurosql_pl/fid_stats).
        kid_subset_size: None = min(1000, ⌊min(N, n_test) / 2⌋); larger than the sets → clamped, with a warning.
        kid_subsets / prdc_k: KID subsets, PRDC neighbours k.
        perceptual: LPIPS backend (perceptual.PERCEPTUAL_NAMES; "stlpips-alex" runs offline).
        memorisation_threshold: flag when median(syn→train) / median(test→train) is below it.
        baseline: also score the training images against the held-out ones (costs N more
            feature passes the first time; cached afterwards).
        fid_method: "torchmetrics" (default) or "eigh" (same FID, symmetric eigensolvers, several
            times faster on a CPU; see metrics.frechet_distance).
        log: progress messages (None = silent).
    """
    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    if n < max(prdc_k + 1, 2):
        raise EvaluationError(f"n must be at least {max(prdc_k + 1, 2)} (PRDC uses k={prdc_k} neighbours), got {n}")
    if fid_method not in M.FID_METHODS:
        raise EvaluationError(f"unknown fid_method {fid_method!r}; choose one of {', '.join(M.FID_METHODS)}")
    if isinstance(features, str) and features not in M.FEATURE_EXTRACTORS:
        raise EvaluationError(f"unknown --features {features!r}; choose one of {', '.join(M.FEATURE_EXTRACTORS)}")
    ckpt = Path(ckpt)
    checkpoint, weights_only = read_checkpoint(ckpt)
    run_dir = run_dir_of(ckpt)
    run_config = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    section, data_source = data_section(Path(data_config) if data_config else None, run_config, checkpoint)
    model, class_path = load_model(ckpt, run_config, checkpoint, weights_only)
    del checkpoint
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model.to(dev)
    say(f"model {class_path} from {ckpt}; data {section['class_path']} ({data_source}); device {dev}")

    # ---------------------------------------------------------------- real images and samples
    dm = build_datamodule(section, data_dir)
    n_train_total = int(dm.num_samples)
    held = heldout_dataset(dm)
    chooser = torch.Generator().manual_seed(seed)
    train_idx = _choose(n_train_total, n, chooser)
    test_idx = _choose(len(held), n, chooser)
    x_train = dm.train_images(train_idx).float()
    x_test = dataset_images(held, test_idx)
    t0 = time.perf_counter()
    samples = draw_samples(model, n, seed, batch_size)
    sample_s = time.perf_counter() - t0
    if samples.shape[1:] != x_test.shape[1:] or x_train.shape[1:] != x_test.shape[1:]:
        raise EvaluationError(
            f"image shapes differ: samples {tuple(samples.shape[1:])}, training images {tuple(x_train.shape[1:])}, "
            f"held-out images {tuple(x_test.shape[1:])}; evaluate with the data the model was trained on"
        )
    say(f"{n} samples in {sample_s:.1f} s; {len(train_idx)} training and {len(test_idx)} held-out images "
        f"(of {n_train_total} and {len(held)})")

    # ---------------------------------------------------------------- feature metrics
    try:
        extractor = (M.build_feature_extractor(features) if isinstance(features, str) else features).to(dev)
    except M.InceptionWeightsMissing as err:
        raise EvaluationError(str(err)) from err
    features_name = features if isinstance(features, str) else M.extractor_id(extractor)
    dataset_name = section["class_path"].rpartition(".")[2]
    image_shape = tuple(int(s) for s in x_test.shape[1:])
    cached: dict[str, bool] = {}

    def real_stats(split: str, images: Tensor) -> M.FeatureStats:
        key = M.stats_cache_key(dataset_name, split, image_shape, images.shape[0], extractor, M.images_fingerprint(images))

        def compute() -> Tensor:
            say(f"features of {images.shape[0]} {split} images ({M.extractor_id(extractor)})")
            return M.extract_features(extractor, images, batch_size)

        if not use_cache:
            cached[split] = False
            return M.FeatureStats.from_features(compute())
        stats, cached[split] = M.load_or_compute_real_stats(key, compute, cache_dir)
        return stats

    t0 = time.perf_counter()
    f_syn = M.extract_features(extractor, samples, batch_size)
    feature_s = time.perf_counter() - t0
    say(f"features of {n} samples in {feature_s:.1f} s ({feature_s / n:.3f} s per image)")
    test_stats = real_stats("test", x_test)
    result: dict[str, Any] = {}
    fm = M.feature_metrics(test_stats, f_syn, kid_subset_size, kid_subsets, prdc_k, seed, fid_method)
    kid_size = fm.pop("kid_subset_size")
    result.update(fm)
    if baseline:
        train_stats = real_stats("train", x_train)
        bm = M.feature_metrics(test_stats, train_stats.features, kid_subset_size, kid_subsets, prdc_k, seed, fid_method)
        bm.pop("kid_subset_size")
        result.update({f"baseline_{k}": v for k, v in bm.items()})
    else:
        result.update({k: None for k in METRIC_KEYS if k.startswith("baseline_")})

    # ---------------------------------------------------------------- pixel-space metrics
    say(f"nearest training images (of {n_train_total}) for {n} samples and {len(test_idx)} held-out images")
    d_all, nn_all = M.nearest_neighbours(torch.cat([samples, x_test]), _train_blocks(dm, n_train_total), device=dev)
    d_syn, d_test = d_all[:n], d_all[n:]
    nn_syn, nn_test = nn_all[:n], nn_all[n:]
    d_train_syn, _ = M.nearest_neighbours(x_train, samples, device=dev)
    d_train_test, _ = M.nearest_neighbours(x_train, x_test, device=dev)
    mem = M.memorisation_check(d_syn, d_test, threshold=memorisation_threshold)
    result.update(
        pixel_syn_to_train=float(d_syn.mean()),
        pixel_test_to_train=float(d_test.mean()),
        pixel_train_to_syn=float(d_train_syn.mean()),
        pixel_train_to_test=float(d_train_test.mean()),
        memorisation_ratio=mem["ratio"],
        memorisation_frac_close=mem["frac_close"],
        memorisation_flag=mem["flag"],
    )
    from .perceptual import build_perceptual

    lpips_net = build_perceptual(perceptual).to(dev)
    for name, x, nn_idx in (("syn", samples, nn_syn), ("test", x_test, nn_test)):
        neighbours = dm.train_images(nn_idx).float()
        result[f"lpips_{name}_nn"] = float(M.paired_lpips(x, neighbours, lpips_net, batch_size).mean())
        result[f"ssim_{name}_nn"] = float(M.paired_ssim(x, neighbours).mean())

    # ---------------------------------------------------------------- reconstructions, time
    recon: dict[str, Any] = {"mse": None, "psnr": None, "ssim": None, "lpips": None}
    fn = reconstruct_callable(model)
    model_n = getattr(model, "num_samples", None)
    if fn is not None and isinstance(model_n, int) and model_n != n_train_total:
        say(f"skipping reconstructions: the model holds codes for N={model_n} images, the data has {n_train_total}")
        fn = None
    if fn is not None:
        try:
            recon = M.reconstruction_metrics(fn, x_train, train_idx, lpips_net, batch_size)
        except Exception as err:  # noqa: BLE001 - an unusual reconstruct() must not sink the evaluation
            warnings.warn(f"reconstruction metrics skipped: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
    result.update({f"recon_{k}": v for k, v in recon.items()})
    times = M.training_times(run_dir)
    result.update(train_epoch_time_s=times["epoch_time_s"], train_total_time_s=times["total_time_s"],
                  train_epochs=times["epochs"])

    report = {
        "checkpoint": str(ckpt.resolve()),
        "run_dir": str(run_dir),
        "model_class": class_path,
        "datamodule_class": section["class_path"],
        "data_source": data_source,
        "settings": {
            "n_samples": n,
            "n_train_images": int(len(train_idx)),
            "n_heldout_images": int(len(test_idx)),
            "n_train_reference": n_train_total,
            "features": features_name,
            "feature_extractor_id": M.extractor_id(extractor),
            "kid_subset_size": kid_size,
            "kid_subsets": kid_subsets,
            "fid_method": fid_method,
            "prdc_k": prdc_k,
            "perceptual": perceptual,
            "memorisation_threshold": memorisation_threshold,
            "seed": seed,
            "device": str(dev),
            "fid_reference": "held-out images",
        },
        "metrics": {k: _finite_or_none(result.get(k)) for k in METRIC_KEYS},
        "timing": {
            "sample_s": sample_s,
            "features_s": feature_s,
            "features_s_per_image": feature_s / n,
            "real_stats_from_cache": cached,
            "eval_total_s": time.perf_counter() - t_start,
        },
    }
    out_path = Path(out) if out is not None else run_dir / "eval.json"
    write_json_atomic(report, out_path)
    report["eval_json"] = str(out_path)
    return report


# ----------------------------------------------------------------------------- report


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


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m neurosql_pl.evaluate",
        description="Score a trained generative model (FID, KID, PRDC, pixel distances, memorisation, "
        "LPIPS/SSIM, reconstructions, training time); writes eval.json and prints a markdown table.",
    )
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint, e.g. runs/mnist/checkpoints/last.ckpt")
    p.add_argument("--n", type=int, default=1000, help="number of samples N (and of real images per set); default 1000")
    p.add_argument("--out", default=None, help="eval.json path (default: <run folder>/eval.json)")
    p.add_argument("--data-config", default=None,
                   help="YAML with a data: section (experiments/configs/data/<name>.yaml or a run's config.yaml); "
                   "default: the run folder's config.yaml, else the checkpoint's datamodule hyper-parameters")
    p.add_argument("--data-dir", default=None, help="override the datamodule's data_dir")
    p.add_argument("--features", default="inception", choices=M.FEATURE_EXTRACTORS,
                   help="feature network for FID/KID/PRDC: inception (TF-FID Inception, default) or random-conv "
                   "(a small random conv net for tests and plumbing; its values are NOT meaningful)")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples, the real-image choice and KID subsets")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64, help="images per network pass")
    p.add_argument("--cache-dir", default=None, help="real-statistics cache (default ~/.cache/neurosql_pl/fid_stats)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the real-statistics cache")
    p.add_argument("--kid-subset-size", type=int, default=None,
                   help="KID subset size (default min(1000, N/2)); larger than the sets → clamped with a warning")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    p.add_argument("--prdc-k", type=int, default=5, help="k of the PRDC k-NN balls (default 5)")
    p.add_argument("--perceptual", default="stlpips-alex", help="LPIPS backend (default stlpips-alex, offline)")
    p.add_argument("--memorisation-threshold", type=float, default=0.5,
                   help="flag memorisation when median(syn→train) / median(held-out→train) is below this (0.5)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip scoring training images against held-out ones (saves N feature passes once)")
    p.add_argument("--fid-method", default="torchmetrics", choices=M.FID_METHODS,
                   help="torchmetrics (default; ≈1 min per FID at D=2048 on a 2-core CPU) or eigh (the same "
                   "value from symmetric eigensolvers, several times faster)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        report = evaluate(
            args.ckpt, n=args.n, out=args.out, data_config=args.data_config, data_dir=args.data_dir,
            features=args.features, seed=args.seed, device=args.device, batch_size=args.batch_size,
            cache_dir=args.cache_dir, use_cache=not args.no_cache, kid_subset_size=args.kid_subset_size,
            kid_subsets=args.kid_subsets, prdc_k=args.prdc_k, perceptual=args.perceptual,
            memorisation_threshold=args.memorisation_threshold, baseline=not args.no_baseline,
            fid_method=args.fid_method, log=log,
        )
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_markdown(report))
    print(f"\nwrote {report['eval_json']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
