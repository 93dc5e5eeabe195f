"""CelebA-scale dry run: does NeuroSQL's assignment machinery scale to N = 162,770 colour 64 px images?

What it measures. For each N of --sizes (default 10,000, 40,000 and 162,770, CelebA's training
set) and each model piece of --configs (default `neurosql`, i.e. NeuroSQL()'s defaults: pixel L1,
multiscale blocks, PCA start, cost_outputs "epoch"; and `neurosql_gpu`: the same plus
ST-LPIPS(alex), cost_outputs "fresh"; on a machine without a GPU it runs on the CPU, and the
report says which device ran it), and each feature-bank setting of --banks:
  - lattice s      the lattice build at that N (d = 16, POT map, cube reference), into a fresh
                   cache folder (`lattice.load_or_build_lattice` as `on_fit_start` calls it);
  - PCA start s    the initial π (`init: pca`: `assignment.pca_assignment`, as `on_fit_start` calls it);
  - bank s         the real images' feature bank (`AssignmentCosts`, built at train start; 0 without a bank);
  - step s         one assignment step: the `assign/time_s` that `AssignmentCallback` logs, and
                   s per 1k images = step s / N · 1,000, with the ratio of s per 1k images between
                   the largest and the smallest N (flat if time is linear in N);
  - peak RSS GB    `resource.getrusage(RUSAGE_SELF).ru_maxrss` of a fresh process per run, so that
                   every peak belongs to one (N, config, banks) run.
Feature banks (`feature_cache_gb`: the GiB budget of *each* in-memory bank; a bank is float32
when it fits, float16 when only half of it fits, and absent otherwise, with a warning, the
features then being computed when needed: `feature_bank.py`, `assignment_costs.py`):
  on      feature_cache_gb = the float32 size of a bank, N·D·4 bytes (D: the loss's feature width,
          12,288 for pixel L1 at 3×64×64, 170,432 with ST-LPIPS); when the predicted peak exceeds
          --max-gb, the float16 size instead; when that does not fit either the run is skipped
          and the table says what it would need;
  capped  feature_cache_gb = --cap-gb (default 0): no bank (any budget below N·D·2 bytes does the
          same), the cost side's fallback: fresh generator and loss passes per block, and pooled
          pixels instead of loss features for the multiscale blocks.
With cost_outputs "epoch" the model keeps two banks (real images, and the generated images the
epoch records); with "fresh" and multiscale blocks the step makes a second, generated bank of the
same size for itself: either way the peak holds two banks.

How. Each run is a fresh process (`--worker`) that trains one epoch through a Lightning Trainer:
the real `NeuroSQL` module, built from the model piece's YAML, its `on_fit_start` (lattice,
PCA), its cost side and its `AssignmentCallback` at the epoch end. The data are N synthetic
images (`SyntheticImages`, a datamodule on the project's `IndexedDataModule`): smooth random
colour images, a seeded function of the image index (image i is the same for every N), held in
memory as uint8 as `CelebADataModule` holds CelebA (N·12,288 bytes: 2.0 GB at 162,770). Costs
do not depend on image content; the LSAP solve times do somewhat (random images are not faces).
The epoch (--epoch):
  record  (default) one real training batch (`limit_train_batches=1`: forward, backward, Adam),
          then, before the assignment callback, the rest of the epoch's records are made the
          way the training steps make them: for every index i, G(Ẑ_i) by the live generator
          (training mode, no gradients) goes through `AssignmentCosts.loss`, the call of
          `NeuroSQL.training_step`, which stores the generated features at π(i). The step then
          reuses every lattice point's features (assign/frac_reused = 1), as after a full epoch.
          A short epoch alone would not do: the points it did not record are rendered afresh at
          the step (`begin_step`), which would time a different step. Only the backward passes
          and the optimiser steps of the other batches are left out. With cost_outputs "fresh"
          nothing is recorded.
  train   a full training epoch (every batch): the real thing, about 3× the generator time of
          `record`.

What it costs on a 2-core CPU (measured figures: docs/speed.md, "NeuroSQL at CelebA scale").
`neurosql`: the generator pass dominates (N × ~10 ms in `record`, 3× that in `train`); the step
itself is a few seconds per 10k images. `neurosql_gpu` on a CPU: ST-LPIPS(alex) at 64 px costs
~50 ms per image, and a capped step makes ~2 × 3 N network passes, banks or not the real bank
takes N passes: ~40 min at N = 10,000, hours above. Peak memory: about 1.5 GB + N × (12 KB of
uint8 image + 2 banks × D × 4 or 2 bytes) for the banked runs, 8.0 GB per float32 pixel-L1 bank
at 162,770 and 111 GB per float32 ST-LPIPS bank. Each run has --timeout-s.

    python -m experiments.bench_scale                                    # the full measurement
    python -m experiments.bench_scale --sizes 2000 5000 --max-gb 4       # a small check
    python -m experiments.bench_scale --configs neurosql --banks on      # one config, one setting
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
import yaml

import neurosql_pl.module as neurosql_module
from neurosql_pl import NeuroSQL
from neurosql_pl.assignment import check_permutation
from neurosql_pl.datamodules.base import IndexedDataModule
from neurosql_pl.datamodules.indexed import IndexedDataset, UInt8ImageDataset, uint8_to_signed
from neurosql_pl.feature_bank import bank_dtype

from experiments.runner import fmt, markdown_table

MODEL_PIECES = Path(__file__).resolve().parent / "configs" / "model"
CELEBA_N = 162_770
DEFAULT_SIZES = [10_000, 40_000, CELEBA_N]
DEFAULT_CONFIGS = ["neurosql", "neurosql_gpu"]
BANK_SETTINGS = ("on", "capped")
RESULT_TAG = "BENCH_SCALE_RESULT "
GIB = 2**30
CHUNK = 256  # synthetic images per seeded chunk (small: the generation adds ~50 MB to the peak at 64 px)
PCA_FIT_SIZE = 10_000  # images the PCA is fitted on (`assignment.pca_scores`' fit_size)
FLAT = 1.5  # s per 1k images counts as flat when the ratio between sizes stays within this factor


# ------------------------------------------------------------------------------------ data
def synthetic_pixels(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """n deterministic, smooth random uint8 images (n, C, H, W): random colours on a coarse
    (H/8 × W/8) grid, bilinearly upsampled, plus ±24 of pixel noise. Chunk j of CHUNK images is
    drawn from seed (seed, j), so image i is the same whatever n."""
    c, h, w = shape
    out = torch.empty(n, c, h, w, dtype=torch.uint8)
    coarse = (max(1, h // 8), max(1, w // 8))
    for j, start in enumerate(range(0, n, CHUNK)):
        b = min(CHUNK, n - start)  # a whole chunk is drawn, so that its first b images are those of any larger n
        g = torch.Generator().manual_seed(seed * 1_000_003 + j)
        low = torch.randint(0, 256, (CHUNK, c, *coarse), generator=g).float()
        smooth = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        smooth += torch.randint(-24, 25, (CHUNK, c, h, w), generator=g, dtype=torch.int16)
        out[start : start + b] = smooth[:b].clamp_(0, 255).round_().to(torch.uint8)
    return out


class SyntheticImages(IndexedDataModule):
    """N synthetic colour images (`synthetic_pixels`) as (image in [-1, 1], index) pairs, held in
    memory as uint8 the way `CelebADataModule` holds its decoded training set."""

    def __init__(self, num_images: int, image_size: int = 64, channels: int = 3, batch_size: int = 128,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(data_dir=".", batch_size=batch_size, num_workers=num_workers, subset=None,
                         subset_mode="first", seed=seed, pin_memory=False)
        if num_images < 2:
            raise ValueError(f"num_images must be >= 2, got {num_images}")
        self.num_images = num_images
        self.image_shape = (channels, image_size, image_size)
        self._pixels: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._pixels = synthetic_pixels(self.num_images, self.image_shape, self.seed)
        self._train_indices = torch.arange(self.num_images)
        self.train_set = self._training_set(UInt8ImageDataset(self._pixels))
        self.val_set = self.test_set = IndexedDataset(UInt8ImageDataset(self._pixels[:2]))  # never run (limit 0)

    def _train_images_at(self, indices: torch.Tensor | None) -> torch.Tensor:
        pixels = self._require(self._pixels, "train_images")
        return uint8_to_signed(pixels if indices is None else pixels[indices])


# ------------------------------------------------------------------------------------ configs
def model_args(config: str) -> dict[str, Any]:
    """The init_args of a NeuroSQL model piece (experiments/configs/model/<config>.yaml)."""
    path = MODEL_PIECES / f"{config}.yaml"
    if not path.is_file():
        raise SystemExit(f"error: no model piece {path}")
    model = yaml.safe_load(path.read_text())["model"]
    if model["class_path"] != "neurosql_pl.NeuroSQL":
        raise SystemExit(f"error: {path} is not a NeuroSQL piece ({model['class_path']})")
    return dict(model.get("init_args") or {})


@functools.cache
def resolved_args(config: str) -> dict[str, Any]:
    """The piece's settings over NeuroSQL()'s defaults (what LightningCLI would build)."""
    return {**NeuroSQL().hparams, **model_args(config)}


@functools.cache
def feature_width(config: str, shape: tuple[int, int, int]) -> int:
    """D, the columns of a feature-bank row of this piece's loss for images of `shape`."""
    return NeuroSQL(**model_args(config)).loss_fn.feature_dim(shape)


# ------------------------------------------------------------------------------------ one run
@dataclass
class RunSpec:
    """One measured run: N images, a model piece, a bank setting and its feature_cache_gb."""

    n: int
    config: str
    banks: str  # "on" or "capped"
    feature_cache_gb: float
    image_size: int = 64
    channels: int = 3
    epoch: str = "record"
    batch_size: int = 128
    seed: int = 0
    accelerator: str = "auto"
    precision: str | None = None
    predicted_gb: float = 0.0
    bank_dtype: str = "none"  # what the banks will be: "float32", "float16" or "none"
    skipped: str = ""  # why the run is not made (then it is reported, not run)
    extra: dict[str, Any] = field(default_factory=dict)


def maxrss_gb() -> float:
    """Peak resident set size of this process so far, GB (10⁹ bytes; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


class _Probe(L.Callback):
    """Times and memory along the fit (callback hooks run before the module's own), and in
    `record` mode the epoch's remaining records, before the assignment callback (the model's
    callbacks come after the trainer's)."""

    def __init__(self, record: bool) -> None:
        self.record = record
        self.times: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self.banks: dict[str, str] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.perf_counter()
        self.times["bank_s"] = self.epoch_start - self.train_start
        self.rss["banks"] = maxrss_gb()
        costs = pl_module.assignment_costs()
        for name in ("real_bank", "fake_bank"):
            bank = getattr(costs, name)
            self.banks[name] = "none" if bank is None else str(bank.values.dtype).removeprefix("torch.")

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        recorded = 0
        costs = pl_module.assignment_costs()
        if self.record and costs.fake_bank is not None:
            if pl_module.codes_per_image != 1:
                raise SystemExit("error: --epoch record supports one code per image (oversample 1)")
            images_at, device = trainer.datamodule.train_images, pl_module.device
            with trainer.precision_plugin.train_step_context():
                for rows in torch.arange(pl_module.num_samples).split(trainer.datamodule.batch_size):
                    idx = rows.to(device)
                    fake = pl_module.generator(pl_module.latents[idx])
                    costs.loss(fake, images_at(rows).to(device), idx, pl_module.assignment[idx])
                    recorded += len(rows)
        self.times["epoch_s"] = time.perf_counter() - self.epoch_start
        self.times["recorded"] = recorded
        self.rss["epoch"] = maxrss_gb()


def measure(spec: RunSpec, lattice_dir: str | Path | None = None) -> dict[str, Any]:
    """Run `spec` in this process: one epoch of the real NeuroSQL fit on N synthetic images and
    its assignment step; returns the row of the report (times in s, memory in GB)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    L.seed_everything(spec.seed, verbose=False)
    rss_imports = maxrss_gb()
    start = time.perf_counter()
    data = SyntheticImages(spec.n, spec.image_size, spec.channels, spec.batch_size, spec.seed)
    data.setup("fit")
    data_s = time.perf_counter() - start
    rss_data = maxrss_gb()
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            timings[name] = time.perf_counter() - t
            timings[f"rss_after_{name}"] = maxrss_gb()
            return out
        return wrapper

    with tempfile.TemporaryDirectory() as fresh_cache:
        model = NeuroSQL(**{**model_args(spec.config), "feature_cache_gb": spec.feature_cache_gb,
                            "lattice_cache_dir": str(lattice_dir or fresh_cache), "seed": spec.seed})
        probe = _Probe(record=spec.epoch == "record")
        cuda = spec.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        precision = spec.precision or ("bf16-mixed" if cuda else "32-true")
        trainer = L.Trainer(
            max_epochs=1, limit_train_batches=1 if spec.epoch == "record" else 1.0, limit_val_batches=0,
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[probe], accelerator=spec.accelerator, devices=1,
            precision=precision,
        )
        # spies on the two calls of on_fit_start, which run the real functions
        lattice = mock.patch.object(neurosql_module, "load_or_build_lattice",
                                    timed("lattice", neurosql_module.load_or_build_lattice))
        pca = mock.patch.object(neurosql_module, "pca_assignment", timed("pca", neurosql_module.pca_assignment))
        with lattice, pca:
            trainer.fit(model, datamodule=data)
    metrics = {k.removeprefix("assign/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("assign/")}
    try:
        check_permutation(model.assignment.cpu(), model.num_codes)
        permutation = True
    except ValueError:
        permutation = False
    step_s = metrics.get("time_s", float("nan"))
    return {
        "N": spec.n, "config": spec.config, "banks": spec.banks, "feature_cache_gb": spec.feature_cache_gb,
        "bank_dtypes": f"{probe.banks.get('real_bank')}/{probe.banks.get('fake_bank')}",
        "device": str(model.device) + (f" ({torch.cuda.get_device_name()})" if cuda else f" ({os.cpu_count()} cores)"),
        "precision": precision, "epoch_mode": spec.epoch,
        "data_s": data_s, "lattice_s": timings.get("lattice", float("nan")), "pca_s": timings.get("pca", float("nan")),
        "bank_s": probe.times.get("bank_s", float("nan")), "epoch_s": probe.times.get("epoch_s", float("nan")),
        "recorded": int(probe.times.get("recorded", 0)),
        "step_s": step_s, "s_per_1k": step_s / spec.n * 1000,
        "frac_reused": metrics.get("frac_reused", float("nan")), "frac_changed": metrics.get("frac_changed", float("nan")),
        "multiscale_kept": metrics.get("multiscale_kept", float("nan")),
        "pi_is_permutation": permutation, "num_codes": model.num_codes,
        "wall_s": time.perf_counter() - start,
        "rss_gb": maxrss_gb(),
        "rss_phases_gb": {"imports": rss_imports, "data": rss_data, "lattice": timings.get("rss_after_lattice"),
                          "pca": timings.get("rss_after_pca"),
                          "banks": probe.rss.get("banks"), "epoch": probe.rss.get("epoch"), "step": maxrss_gb()},
        "gpu_peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "predicted_gb": spec.predicted_gb,
    }


def measure_in_subprocess(spec: RunSpec, timeout_s: float) -> dict[str, Any]:
    """`measure(spec)` in a fresh Python process (its own peak RSS); a failed, killed or timed-out
    run gives a row with `error`."""
    cmd = [sys.executable, "-m", "experiments.bench_scale", "--worker", json.dumps(asdict(spec))]
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**skipped_row(spec), "error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    why = "killed (out of memory?)" if done.returncode in (-9, 137) else f"exit {done.returncode}"
    return {**skipped_row(spec), "error": f"{why}: {' / '.join(tail)}"}


def skipped_row(spec: RunSpec) -> dict[str, Any]:
    nan = float("nan")
    return {"N": spec.n, "config": spec.config, "banks": spec.banks, "feature_cache_gb": spec.feature_cache_gb,
            "step_s": nan, "s_per_1k": nan, "pca_s": nan, "lattice_s": nan, "rss_gb": nan,
            "predicted_gb": spec.predicted_gb, "error": spec.skipped}


# ------------------------------------------------------------------------------------ planning
def banks_held(config: str) -> int:
    """Banks of N rows at the peak when banks fit: 2 (real + generated) with cost_outputs "epoch",
    and with "fresh" when the step scores each point more than once (multiscale, sweeps > 1)."""
    hp = resolved_args(config)
    repeated = hp["block_strategy"] == "multiscale" or hp["assign_sweeps"] > 1
    return 2 if hp["cost_outputs"] == "epoch" or repeated else 1


PROJECTION_ROWS = 2048  # bank rows per cloud that `assignment.feature_projection` fits its directions on


def projection_bytes(n: int, dim: int, has_banks: bool) -> float:
    """The step's `feature_projection` transient (multiscale and neighbour blocks) with feature
    banks: its fit matrix of 2 clouds × min(N, 2,048) bank rows in float32 is held about twice
    (measured: 1.93×); without banks the blocks come from 192 pooled pixels, negligible."""
    return 2 * 2 * min(n, PROJECTION_ROWS) * dim * 4 if has_banks else 0.0


def predicted_gb(n: int, shape: tuple[int, int, int], dim: int, dtype_bytes: int, banks: int, perceptual: bool) -> float:
    """A rough peak RSS (GB) to keep runs within --max-gb: the process (≈ 1 GB, + 0.3 with a
    perceptual network), the uint8 images, then the larger of the PCA start (its fit on up to 10k
    images in float64, ≈ 2.5 copies) and the banks with the step's transients (≈ 0.75 GB of
    block costs, and `projection_bytes`)."""
    pixels = math.prod(shape)
    base = 1.0e9 + (0.3e9 if perceptual else 0.0)
    pca = 2.5 * min(n, PCA_FIT_SIZE) * pixels * 8
    bank_bytes = banks * n * dim * dtype_bytes
    step = 0.75e9 + projection_bytes(n, dim, dtype_bytes > 0)
    return (base + n * pixels + max(pca, bank_bytes + step)) / 1e9


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """The runs, with each bank setting's feature_cache_gb and the runs skipped by --max-gb."""
    shape = (args.channels, args.image_size, args.image_size)
    specs = []
    for config in args.configs:
        dim = feature_width(config, shape)
        banks = banks_held(config)
        perceptual = resolved_args(config)["perceptual"] is not None
        for n in args.sizes:
            for setting in args.banks:
                common = dict(n=n, config=config, banks=setting, image_size=args.image_size, channels=args.channels,
                              epoch=args.epoch, batch_size=args.batch_size, seed=args.seed,
                              accelerator=args.accelerator, precision=args.precision)
                if setting == "capped":
                    dtype = bank_dtype(n, dim, args.cap_gb)
                    options = [(dtype.itemsize if dtype else 0, str(dtype).removeprefix("torch.") if dtype else "none",
                                args.cap_gb)]
                else:  # exactly the size of a bank in float32, else in float16 (`feature_bank.bank_dtype`)
                    options = [(nbytes, name, n * dim * nbytes / GIB) for nbytes, name in ((4, "float32"), (2, "float16"))]
                for nbytes, name, budget in options:
                    need = predicted_gb(n, shape, dim, nbytes, banks, perceptual)
                    if need <= args.max_gb:
                        specs.append(RunSpec(feature_cache_gb=budget, bank_dtype=name, predicted_gb=need, **common))
                        break
                else:
                    specs.append(RunSpec(feature_cache_gb=budget, bank_dtype=name, predicted_gb=need, **common,
                                         skipped=f"skipped: needs ≈ {need:.0f} GB with {name} banks > --max-gb "
                                                 f"{args.max_gb:.0f}"))
    return specs


# ------------------------------------------------------------------------------------ report
def find(rows: list[dict[str, Any]], n: int, config: str, banks: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["N"] == n and r["config"] == config and r["banks"] == banks), None)


def pair(rows: list[dict[str, Any]], n: int, config: str, key: str, digits: int = 3) -> str:
    """`on / capped` of one quantity (only the settings that were asked for)."""
    cells = []
    for banks in BANK_SETTINGS:
        row = find(rows, n, config, banks)
        if row is not None:
            cell = fmt(row.get(key), digits)
            if key == "rss_gb" and row.get("bank_dtypes", "").startswith("float16"):
                cell += " (f16)"
            cells.append(cell)
    return " / ".join(cells)


def first_measured(rows: list[dict[str, Any]], n: int, config: str, key: str) -> Any:
    """The value of `key` from the first bank setting that ran (the PCA start and the lattice do
    not depend on the banks)."""
    for banks in BANK_SETTINGS:
        row = find(rows, n, config, banks)
        if row is not None and math.isfinite(row.get(key, float("nan"))):
            return row[key]
    return None


def table(rows: list[dict[str, Any]], settings: list[str]) -> str:
    """The markdown table: one row per (N, config); `on / capped` cells for the bank settings run."""
    label = " / ".join(settings)
    header = ["N", "config", f"step s ({label})", f"s per 1k images ({label})", "PCA start s", "lattice s",
              f"peak RSS GB ({label})"]
    keys = sorted(dict.fromkeys((r["N"], r["config"]) for r in rows), key=lambda k: (k[1], k[0]))
    return markdown_table(header, [
        [f"{n:,}", config, pair(rows, n, config, "step_s"), pair(rows, n, config, "s_per_1k"),
         fmt(first_measured(rows, n, config, "pca_s")), fmt(first_measured(rows, n, config, "lattice_s")),
         pair(rows, n, config, "rss_gb")]
        for n, config in keys
    ])


PHASES = ("imports", "data", "pca", "banks", "epoch", "step")


def details(rows: list[dict[str, Any]]) -> str:
    """Per run: the banks held, the other phases, what the step saw, and errors or skips."""
    header = ["N", "config", "banks", "feature_cache_gb", "banks held (real/generated)", "bank s", "epoch s",
              "frac_reused", "multiscale kept", "π permutation", "RSS by phase GB (imports, data, PCA, banks, epoch, step)",
              "predicted GB", "run s", "note"]
    lines = []
    for r in rows:
        phases = r.get("rss_phases_gb") or {}
        lines.append([f"{r['N']:,}", r["config"], r["banks"], r.get("feature_cache_gb"), r.get("bank_dtypes", "–"),
                      r.get("bank_s"), r.get("epoch_s"), r.get("frac_reused"), r.get("multiscale_kept"),
                      r.get("pi_is_permutation"), ", ".join(fmt(phases.get(k)) for k in PHASES) if phases else "–",
                      r.get("predicted_gb"), r.get("wall_s"), r.get("error", "") or r.get("device", "")])
    return markdown_table(header, lines)


def flatness(rows: list[dict[str, Any]]) -> list[str]:
    """Per (config, banks): s per 1k images at the largest N over the smallest, and the verdict."""
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        for banks in BANK_SETTINGS:
            done = sorted((r for r in rows if r["config"] == config and r["banks"] == banks
                           and math.isfinite(r.get("s_per_1k", float("nan")))), key=lambda r: r["N"])
            if len(done) < 2:
                continue
            lo, hi = done[0], done[-1]
            ratio = hi["s_per_1k"] / lo["s_per_1k"]
            verdict = "flat" if 1 / FLAT <= ratio <= FLAT else ("grows faster than N" if ratio > FLAT else "falls")
            steps = ", ".join(f"{r['N']:,}: {r['s_per_1k']:.3g}" for r in done)
            out.append(f"- {config}, banks {banks}: s per 1k images {steps}; ratio {hi['N']:,} / {lo['N']:,} = "
                       f"{ratio:.2f} ({verdict}; within {FLAT}× counts as flat)")
    return out


def estimate_gb(row: dict[str, Any], n: int, dim: int, pixels: int, dtype_bytes: int, banks: int) -> float:
    """Peak RSS (GB) at N = n with `banks` banks of dtype_bytes per value (0 = none), from a
    measured row. The peak is the larger of two phases: the PCA start (the RSS after it, which
    grows with N only by the uint8 images) and the banks' phase (the final peak, which grows by
    the images, the bank rows and the feature projection's transient, `projection_bytes`). Where
    an earlier phase (the PCA start, the training batch) was the peak, the banks' phase is taken
    as high as it, so the estimate errs on the large side."""
    own_bytes = {"float32": 4, "float16": 2}.get(str(row.get("bank_dtypes", "none")).split("/")[0], 0)
    at_pca = (row.get("rss_phases_gb") or {}).get("pca") or row["rss_gb"]
    images = (n - row["N"]) * pixels
    grown = (images + banks * dim * (n * dtype_bytes - row["N"] * own_bytes)
             + projection_bytes(n, dim, dtype_bytes > 0) - projection_bytes(row["N"], dim, own_bytes > 0))
    return max(at_pca + images / 1e9, row["rss_gb"] + grown / 1e9)


def recommendation(rows: list[dict[str, Any]], shape: tuple[int, int, int], target_n: int = CELEBA_N,
                   machines: tuple[int, ...] = (24, 128), headroom: float = 0.85) -> list[str]:
    """What to set at N = target_n on machines of `machines` GB, from the measured peaks: the
    banked estimates from the largest N measured with banks on, the bankless one from the largest
    capped run (either from the other where one is missing), extrapolated below target_n."""
    pixels = math.prod(shape)
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        done = [r for r in rows if r["config"] == config and math.isfinite(r.get("rss_gb", float("nan")))]
        if not done:
            continue
        largest = {b: max((r for r in done if r["banks"] == b), key=lambda r: r["N"], default=None) for b in BANK_SETTINGS}
        on, capped = largest["on"] or largest["capped"], largest["capped"] or largest["on"]
        dim, banks = feature_width(config, shape), banks_held(config)
        est = {name: estimate_gb(anchor, target_n, dim, pixels, nbytes, banks)
               for name, nbytes, anchor in (("float32", 4, on), ("float16", 2, on), ("none", 0, capped))}
        sources = sorted({f"N = {r['N']:,} banks {r['banks']}" for r in (on, capped)})
        how = "measured" if {on["N"], capped["N"]} == {target_n} else "extrapolated from the runs at " + " and ".join(sources)
        budget = {"float32": target_n * dim * 4 / GIB, "float16": target_n * dim * 2 / GIB}
        slow = ""
        if largest["on"] is not None and largest["capped"] is not None and largest["on"]["N"] == largest["capped"]["N"]:
            slow = (f"; at N = {largest['on']['N']:,} the capped step took "
                    f"{largest['capped']['step_s'] / largest['on']['step_s']:.1f}× the banked step's time")
        out.append(f"- {config} at N = {target_n:,} (bank rows of D = {dim:,} values, {banks} banks at the peak; "
                   f"peak RSS {how}): float32 banks ≈ {est['float32']:.1f} GB, float16 ≈ {est['float16']:.1f} GB, "
                   f"none ≈ {est['none']:.1f} GB.")
        for ram in machines:
            usable = headroom * ram
            if est["float32"] <= usable:
                advice = f"--model.feature_cache_gb {math.ceil(budget['float32'] * 10) / 10:g} or more (float32 banks)"
            elif est["float16"] <= usable:
                advice = (f"--model.feature_cache_gb from {math.ceil(budget['float16'] * 10) / 10:g} to "
                          f"{math.floor(budget['float32'] * 10) / 10:g} (float16 banks)")
            elif est["none"] <= usable:
                advice = f"--model.feature_cache_gb 0, or anything below {budget['float16']:.1f} (no banks{slow})"
            else:
                advice = "does not fit, even without banks"
            out.append(f"  - {ram} GB of RAM ({usable:.0f} GB usable): {advice}")
    return out


def report(rows: list[dict[str, Any]], settings: list[str], shape: tuple[int, int, int]) -> str:
    device = next((r["device"] for r in rows if r.get("device")), "not run")
    parts = [
        f"## NeuroSQL at CelebA scale: synthetic {shape[0]}×{shape[1]}×{shape[2]} images, device {device}",
        "", table(rows, settings), "",
        "Per run (banks held: the dtype of the real / generated bank; RSS after each phase is the peak so far):", "",
        details(rows), "", "Time per image from the smallest to the largest N:", "",
        *(flatness(rows) or ["- (fewer than two sizes measured)"]), "",
        f"Recommendation (peak RSS at N = {CELEBA_N:,}; a machine's RAM with 15 % left to the system):", "",
        *(recommendation(rows, shape) or ["- (nothing measured)"]),
    ]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ main
def run_benchmark(args: argparse.Namespace, in_process: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Plan, run each measurable spec (in a fresh process unless `in_process`), return the rows and the report."""
    rows = []
    for spec in plan(args):
        if spec.skipped:
            rows.append(skipped_row(spec))
        else:
            row = measure(spec) if in_process else measure_in_subprocess(spec, args.timeout_s)
            rows.append(row)
            print(f"N={spec.n:>7,}  {spec.config:<13} banks {spec.banks:<6} ({spec.bank_dtype}) step "
                  f"{fmt(row.get('step_s'))} s, PCA {fmt(row.get('pca_s'))} s, lattice {fmt(row.get('lattice_s'))} s, "
                  f"peak RSS {fmt(row.get('rss_gb'))} GB, run {fmt(row.get('wall_s'))} s {row.get('error', '')}",
                  flush=True)
    text = report(rows, args.banks, (args.channels, args.image_size, args.image_size))
    return rows, text


def available_gb() -> float:
    """MemAvailable of /proc/meminfo, GB (the total RAM where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="N, the numbers of images")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="model pieces of experiments/configs/model")
    parser.add_argument("--banks", nargs="+", choices=BANK_SETTINGS, default=list(BANK_SETTINGS),
                        help="feature-bank settings: on (as large as fits --max-gb) and capped (--cap-gb)")
    parser.add_argument("--cap-gb", type=float, default=0.0, help="feature_cache_gb of the capped runs")
    parser.add_argument("--max-gb", type=float, default=None,
                        help="skip runs predicted to need more (default: 85 %% of MemAvailable at start)")
    parser.add_argument("--epoch", choices=("record", "train"), default="record",
                        help="record: one training batch, then the epoch's records through the module's loss; "
                             "train: a full training epoch")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--batch-size", type=int, default=128, help="as experiments/configs/data/celeba.yaml")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto picks a GPU when there is one")
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on a GPU (trainer/gpu.yaml), else 32-true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=4 * 3600, help="wall-time limit of each run")
    parser.add_argument("--out", default=None, help="also write the report (.md) and the rows (.json) here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one run, as JSON: a fresh process
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        row = measure(RunSpec(**json.loads(args.worker)))
        print(RESULT_TAG + json.dumps(row), flush=True)
        return
    if min(args.sizes) < 2:
        raise SystemExit("error: every size must be >= 2")
    if args.max_gb is None:  # after this process has loaded what planning needs, which stays with it
        for config in args.configs:
            feature_width(config, (args.channels, args.image_size, args.image_size))
        gc.collect()
        args.max_gb = 0.85 * available_gb()
    print(f"# bench_scale: sizes {args.sizes}, configs {args.configs}, banks {args.banks}, epoch {args.epoch}, "
          f"max {args.max_gb:.1f} GB per run, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows, text = run_benchmark(args)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
