"""FID, KID and PRDC: how far a set of generated images' features lies from real images' features.

Every function takes feature matrices (n, D) (``features.extract_features``) or, for FID, their
``features.FeatureStats``.

    ``frechet_distance``      FID, computed by torchmetrics' ``FrechetInceptionDistance``
                              (default), or method="eigh": the same value by symmetric
                              eigensolvers, ≈1 s instead of ≈1 min on a 2-core CPU at D = 2048.
    ``kernel_inception_distance``  KID (mean, std), torchmetrics' ``KernelInceptionDistance``.
                              Default subset size min(1000, half the smaller set). A subset size
                              larger than either set is clamped to the smaller set size with a
                              ``KIDSubsetSizeWarning`` (the value used is returned).
    ``prdc``                  precision / recall / density / coverage of Naeem et al. (2020),
                              k-nearest-neighbour balls in feature space.
    ``feature_metrics``       all of them at once, as evaluate reports them.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from .costs import pairwise_sq_dists
from .features import FeatureStats

__all__ = [
    "FID_METHODS",
    "FidMethod",
    "KIDSubsetSizeWarning",
    "feature_metrics",
    "frechet_distance",
    "kernel_inception_distance",
    "prdc",
]

#: the ways ``frechet_distance`` computes FID (the same value)
FidMethod = Literal["torchmetrics", "eigh"]
FID_METHODS: tuple[str, ...] = get_args(FidMethod)


class KIDSubsetSizeWarning(UserWarning):
    """KID's subset size was larger than one of the feature sets and was reduced."""


class _Passthrough(nn.Module):
    """Identity 'feature extractor', so torchmetrics' FID/KID can be fed precomputed features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def _as_stats(x: FeatureStats | Tensor) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else FeatureStats.from_features(x, keep_features=True)


def frechet_distance(real: FeatureStats | Tensor, fake: FeatureStats | Tensor, method: FidMethod = "torchmetrics") -> float:
    """FID = ‖μ_r − μ_f‖² + tr Σ_r + tr Σ_f − 2 tr (Σ_r Σ_f)^½ between two feature sets
    (features (n, D) or their FeatureStats), in float64.

    method="torchmetrics" (default): torchmetrics' FrechetInceptionDistance computes it from the
    sets' means and covariances; its tr (Σ_r Σ_f)^½ takes the general (non-symmetric) eigenvalues
    of Σ_r Σ_f, ≈ 45–90 s for D = 2048 on a busy 2-core CPU. method="eigh": the same quantity
    with symmetric eigensolvers. When both sets kept their features and one set is smaller than
    D (N = 1000 Inception features of D = 2048), Σ_r = AᵀA and Σ_f = BᵀB with A, B the centred
    features / sqrt(n − 1), and tr (Σ_r Σ_f)^½ is the sum of the singular values of A Bᵀ, an
    (n_r × n_f) matrix: ≈ 1 s. Otherwise Σ sqrt(eig(Σ_r^½ Σ_f Σ_r^½)). It agrees with torchmetrics
    to ~1e-6 relative (tests/test_distribution_metrics.py).
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
    fid_method: FidMethod = "torchmetrics",
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
