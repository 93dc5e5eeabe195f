"""LPIPS as a squared Euclidean distance between feature vectors.

LPIPS (Zhang et al. 2018) with backbone activations x_l of shape (C_l, H_l, W_l),
unit-normalised over channels (x̂_l = x_l / ‖x_l‖_c) and non-negative per-channel weights
w_lc (the "linear heads"):

    LPIPS(x, y) = Σ_l 1/(H_l W_l) Σ_{h,w} Σ_c w_lc (x̂_lchw − ŷ_lchw)²  =  ‖φ(x) − φ(y)‖²,
    φ(x)        = concat_l flatten( sqrt(w_lc / (H_l W_l)) · x̂_l ).

So a whole matrix of LPIPS values is a GEMM on φ (see ``costs.pairwise_sq_dists``).
The identity needs w_lc ≥ 0. All shipped heads are (the lpips trainer clamps them at 0;
checked for lpips v0.1 alex/vgg/squeeze and stlpips alex/vgg); a head with a negative
weight is refused with a ValueError rather than silently mis-computed.

Backends (``build_perceptual``):
- "stlpips-alex", "stlpips-vgg": shift-tolerant LPIPS from the ``stlpips_pytorch`` package.
  Complete trained weights (backbone + heads) ship inside the package; fully offline.
  Their forward is the same spatial average of weighted squared differences of
  channel-normalised features, so the identity above holds unchanged. Their backbones are
  built from scratch (no torchvision ImageNet download), then the package checkpoint is loaded.
- "lpips-alex", "lpips-vgg", "lpips-squeeze": the ``lpips`` package. Heads ship with it; the
  ImageNet backbones are torchvision downloads into $TORCH_HOME/hub/checkpoints. Missing
  files raise ``PerceptualWeightsMissing`` after one short download attempt.
  ``pretrained_backbone=False`` uses a random backbone (lpips' ``pnet_rand=True``): for
  plumbing tests only, it is not a meaningful perceptual metric.

Input rule: images (B, C, H, W), C ∈ {1, 3}, values in [-1, 1]. Grey images are repeated to
3 channels. With ``input_size=None`` images whose shorter side is below ``MIN_INPUT_SIZE``
(32 px; vanilla AlexNet fails below 31 px) are bilinearly upsampled so the shorter side is
32 px (MNIST 28 → 32); larger images are used as they are. With ``input_size=s`` the
shorter side is always resized to s (bilinear; antialiased when shrinking). Resizing is a
fixed linear map, so φ stays a fixed function of the image and the identity still holds.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
import types
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .files import atomic_writer
from .images import check_images

__all__ = [
    "PERCEPTUAL_NAMES",
    "MIN_INPUT_SIZE",
    "PerceptualWeightsMissing",
    "PerceptualFeatures",
    "build_perceptual",
    "backbone_weights_path",
]

PERCEPTUAL_NAMES: tuple[str, ...] = ("stlpips-alex", "stlpips-vgg", "lpips-alex", "lpips-vgg", "lpips-squeeze")
MIN_INPUT_SIZE: int = 32
DOWNLOAD_TIMEOUT_S: float = 10.0

# lpips net name -> torchvision weights enum that `tv.<net>(pretrained=True)` resolves to.
_TV_WEIGHTS: dict[str, tuple[str, str]] = {
    "alex": ("AlexNet_Weights", "AlexNet"),
    "vgg": ("VGG16_Weights", "VGG16"),
    "squeeze": ("SqueezeNet1_1_Weights", "SqueezeNet 1.1"),
}


class PerceptualWeightsMissing(RuntimeError):
    """An ImageNet backbone file needed by an ``lpips-*`` backend is absent and cannot be downloaded."""


def backbone_weights_path(net: str) -> tuple[str, str]:
    """(url, local path) of the torchvision ImageNet weights that lpips' ``net`` backbone loads.

    The path is ``torch.hub.get_dir()/checkpoints/<file>``, i.e. $TORCH_HOME/hub/checkpoints.
    """
    import torchvision.models as tvm

    enum_name, _ = _TV_WEIGHTS[net]
    url = getattr(tvm, enum_name).IMAGENET1K_V1.url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return url, path


def _download_with_timeout(url: str, dst: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` to ``dst`` (atomic rename), verifying the sha256 prefix in the file name."""
    import hashlib

    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_writer(dst) as fh:
        while chunk := resp.read(1 << 20):
            sha.update(chunk)
            fh.write(chunk)
        m = re.search(r"-([a-f0-9]+)\.", os.path.basename(dst))
        if m and not sha.hexdigest().startswith(m.group(1)):  # raising here discards the file
            raise OSError(f"sha256 of the download does not start with {m.group(1)}")


def _ensure_backbone_file(name: str, net: str) -> None:
    """Fail fast if the ImageNet backbone for ``lpips-<net>`` is missing and cannot be fetched."""
    url, path = backbone_weights_path(net)
    if os.path.isfile(path):
        return
    try:
        _download_with_timeout(url, path)
    except Exception as err:  # noqa: BLE001 - any failure becomes one clear message
        directory, fname = os.path.split(path)
        raise PerceptualWeightsMissing(
            f"perceptual={name!r} needs the ImageNet {_TV_WEIGHTS[net][1]} backbone weights file "
            f"{fname!r}, which is not in {directory!r} and could not be downloaded "
            f"({type(err).__name__}: {err}). On a machine with internet, fetch {url} and place it "
            f"at {path} (directory = $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to "
            f"~/.cache/torch). Offline alternative: use perceptual='stlpips-alex' (or "
            f"'stlpips-vgg'), whose complete weights ship inside the stlpips-pytorch package."
        ) from err
    if not os.path.isfile(path):  # a download stub that "succeeded" without writing the file
        raise PerceptualWeightsMissing(f"download of {url} did not produce {path}")


class PerceptualFeatures(nn.Module):
    """Frozen LPIPS embedding φ: images (B, C, H, W) in [-1, 1] → (B, D), LPIPS = ‖φx − φy‖².

    Wraps a package LPIPS module (``self.metric``: lpips.LPIPS or stlpips.LPIPS) and uses its
    scaling layer, backbone and linear-head weights. Parameters are frozen and the module
    always stays in eval mode, but the output is differentiable w.r.t. the input.
    """

    def __init__(self, metric: nn.Module, name: str, input_size: int | None = None, check_range: bool = True):
        super().__init__()
        if input_size is not None and input_size < MIN_INPUT_SIZE:
            raise ValueError(f"input_size must be None or >= {MIN_INPUT_SIZE}, got {input_size}")
        self.metric = metric
        self.name = name
        self.input_size = input_size
        self.check_range = check_range
        for p in self.metric.parameters():
            p.requires_grad_(False)
        for l, w in enumerate(self._head_weights()):
            if (w < 0).any():
                raise ValueError(
                    f"{name}: linear head {l} has negative weights, so LPIPS is not a squared "
                    "distance of features and the GEMM cost identity does not hold"
                )
        self._dims: dict[tuple[int, int, int], int] = {}
        super().train(False)

    def train(self, mode: bool = True) -> "PerceptualFeatures":
        """No-op: the metric stays in eval mode (its heads contain dropout)."""
        return super().train(False)

    def _head_weights(self) -> list[Tensor]:
        """Per-layer channel weights w_l, each (C_l,) ≥ 0."""
        return [lin.model[-1].weight.reshape(-1) for lin in self.metric.lins]

    def _target_hw(self, h: int, w: int) -> tuple[int, int] | None:
        short = min(h, w)
        if self.input_size is None:
            if short >= MIN_INPUT_SIZE:
                return None
            target = MIN_INPUT_SIZE
        elif short == self.input_size:
            return None
        else:
            target = self.input_size
        return (round(h * target / short), round(w * target / short))

    def preprocess(self, x: Tensor) -> Tensor:
        """Validate, repeat grey to RGB and resize: (B, C, H, W) in [-1, 1] → (B, 3, H', W')."""
        check_images(x, self.name, check_range=self.check_range)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        hw = self._target_hw(x.shape[2], x.shape[3])
        if hw is not None:
            shrink = hw[0] < x.shape[2]
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
        return x

    def layer_features(self, x: Tensor) -> list[Tensor]:
        """Scaled normalised activations sqrt(w_lc / (H_l W_l))·x̂_l, each (B, C_l, H_l, W_l)."""
        x = self.preprocess(x)
        metric = self.metric
        if getattr(metric, "version", "0.1") == "0.1":
            x = metric.scaling_layer(x)
        outs = metric.net(x)
        feats = []
        for h, w_l in zip(outs, self._head_weights()):
            h = h.float()
            hat = h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)  # = lpips.normalize_tensor
            scale = (w_l.float() / (h.shape[2] * h.shape[3])).sqrt()
            feats.append(hat * scale.view(1, -1, 1, 1))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """φ(x): (B, C, H, W) in [-1, 1] → (B, D) float32."""
        return torch.cat([f.flatten(1) for f in self.layer_features(x)], dim=1)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS(x_i, y_i) = ‖φ(x_i) − φ(y_i)‖² for paired batches: (B, …) × (B, …) → (B,)."""
        if x.shape != y.shape:
            raise ValueError(f"{self.name}: x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        f = self(torch.cat([x, y], dim=0))
        fx, fy = f.split(x.shape[0], dim=0)
        return (fx - fy).square().sum(dim=1)

    def feature_dim(self, image_shape: tuple[int, int, int]) -> int:
        """D for images of shape (C, H, W) (one dummy forward, cached)."""
        key = tuple(int(s) for s in image_shape)
        if len(key) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        if key not in self._dims:
            buf = next(iter(self.metric.buffers()), None)
            device = buf.device if buf is not None else torch.device("cpu")
            with torch.no_grad():
                self._dims[key] = int(self(torch.zeros((1, *key), device=device)).shape[1])
        return self._dims[key]


def _build_metric(name: str, pretrained_backbone: bool) -> nn.Module:
    family, _, net = name.partition("-")
    if family == "stlpips":
        if not pretrained_backbone:
            raise ValueError(f"{name}: pretrained_backbone=False is only supported for the lpips-* backends")
        with _ipython_stand_in():
            from stlpips_pytorch import stlpips

        # variant="shift_tolerant" builds the backbone from scratch (no torchvision download) and
        # loads the package's complete checkpoint (backbone + heads, weights/vST0.0/<net>_shift_tolerant.pth).
        metric = stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False)
        _check_stlpips_loaded(metric, net)
        return metric
    import lpips

    if pretrained_backbone:
        _ensure_backbone_file(name, net)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*")
        return lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False)


@contextlib.contextmanager
def _ipython_stand_in() -> Iterator[None]:
    """Let stlpips_pytorch import without IPython installed.

    Two of its modules (invariant_networks.py, models_lpf/downsample.py) run
    `from IPython import embed`, a debugging hook they never call; it is its only use of IPython
    (torchsummary, its other undeclared import, is a real dependency). When `import IPython`
    fails, a stand-in module with that one name sits in sys.modules while stlpips loads and is
    removed afterwards, so no other code ever sees it.
    """
    try:
        import IPython  # noqa: F401
    except ImportError:
        pass
    else:
        yield
        return
    missing = object()
    previous = sys.modules.get("IPython", missing)
    stand_in = types.ModuleType("IPython", "stand-in for stlpips_pytorch's unused `from IPython import embed`")
    stand_in.embed = lambda *args, **kwargs: None
    sys.modules["IPython"] = stand_in
    try:
        yield
    finally:
        if previous is missing:
            sys.modules.pop("IPython", None)
        else:
            sys.modules["IPython"] = previous


def _check_stlpips_loaded(metric: nn.Module, net: str) -> None:
    """stlpips loads with strict=False: make sure every backbone/head tensor was in the checkpoint."""
    from stlpips_pytorch import stlpips

    path = os.path.join(os.path.dirname(inspect.getfile(stlpips)), "weights", "vST0.0", f"{net}_shift_tolerant.pth")
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    # "lins.k.*" duplicates "link.*" (the same modules registered twice), so it is not needed.
    missing = [k for k in metric.state_dict() if k not in ckpt and not k.startswith("lins.")]
    if missing:
        raise RuntimeError(f"stlpips-{net}: checkpoint {path} lacks {missing[:5]}")


def build_perceptual(
    name: str, pretrained_backbone: bool = True, input_size: int | None = None
) -> PerceptualFeatures:
    """Build a frozen LPIPS embedding.

    Args:
        name: one of PERCEPTUAL_NAMES ("stlpips-alex" runs offline).
        pretrained_backbone: False = random backbone for lpips-* (plumbing tests only).
        input_size: None = upsample images smaller than 32 px to 32; s = resize shorter side to s.

    Raises:
        ValueError: unknown name. PerceptualWeightsMissing: lpips-* ImageNet backbone unavailable.
    """
    if name not in PERCEPTUAL_NAMES:
        raise ValueError(f"unknown perceptual backend {name!r}; choose one of {', '.join(PERCEPTUAL_NAMES)}")
    return PerceptualFeatures(_build_metric(name, pretrained_backbone), name=name, input_size=input_size)
