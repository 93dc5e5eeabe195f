"""Generator networks G_θ: R^d → images in [-1, 1].

`UNetGenerator` (the paper's Figure 3 uses a U-Net for brain images): the code is projected
to a coarse map at a quarter of the image size, a small U-Net (two stride-2 downsamplings,
then upsampling with skip connections from the same resolutions) refines it, and two
upsampling stages bring it to full size, ending in a 3×3 convolution + tanh.

`DCGANGenerator` follows Radford et al. (2016): a linear projection of the code to a coarse
s₀×s₀ map, then stride-2 transposed convolutions (BatchNorm + ReLU) that double the
resolution and halve the width, the last one to the output channels, then tanh.
s₀ ∈ {4, …, 7} is chosen so that s₀·2^k equals the image size (28 = 7·2², 32 = 4·2³, 64 = 4·2⁴).

Both generators double the resolution with `upsample` (`UPSAMPLES`):
  "transposed": a stride-2 4×4 transposed convolution (padding 1), as DCGAN;
  "resize":     nearest-neighbour ×2 upsampling, then a 3×3 convolution (padding 1) with the
                same widths (Odena et al. 2016, "Deconvolution and checkerboard artifacts").
A stride-2 transposed convolution gives the output pixels of each parity class their own
kernel taps, so even a flat input comes out as a period-2 pattern unless the taps happen to
balance: the checkerboard. Resize-convolution treats all pixels alike: a flat input stays flat
away from the borders, whatever the weights. It has 9/16 of the transposed layers' weights
(width 64, d = 16, 1×28×28: 175,041 parameters against 232,833).

`DCGANEncoder` is its mirror image (stride-2 convolutions down to s₀×s₀, then a linear layer);
the baselines use it as the VAE's encoder and the GAN's discriminator (`build_encoder`).
"""

from __future__ import annotations

import torch
from torch import nn


UPSAMPLES = ("transposed", "resize")


def check_upsample(upsample: str) -> None:
    """ValueError unless `upsample` is one of `UPSAMPLES`."""
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")


def upsample2x(c_in: int, c_out: int, upsample: str, bias: bool = True) -> nn.Module:
    """A layer (B, c_in, S, S) → (B, c_out, 2S, 2S): "transposed" or "resize" (see the module doc)."""
    check_upsample(upsample)
    if upsample == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))


def _coarse_size(image_size: int) -> tuple[int, int]:
    """(s₀, k) with s₀·2^k = image_size and 4 ≤ s₀ ≤ 7; ValueError if none exists."""
    size, steps = image_size, 0
    while size > 7 and size % 2 == 0:
        size, steps = size // 2, steps + 1
    if not 4 <= size <= 7 or steps == 0:
        raise ValueError(
            f"image_size={image_size} is not supported by the DCGAN generator: it must be s0 * 2**k "
            f"with 4 <= s0 <= 7 and k >= 1 (e.g. 28, 32, 64, 128)"
        )
    return size, steps


def check_generator_args(latent_dim: int, channels: int, width: int, min_width: int) -> None:
    """ValueError unless latent_dim ≥ 1, channels ∈ {1, 3} and width ≥ min_width."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if width < min_width:
        raise ValueError(f"width must be >= {min_width}, got {width}")


class DCGANGenerator(nn.Module):
    """DCGAN generator: (B, latent_dim) codes → (B, channels, image_size, image_size) in [-1, 1].

    `width` is the channel count of the last hidden layer; the coarsest map has width·2^(k-1)
    channels. width=64 at 28 px (128@7² → 64@14² → C@28²) has ≈0.23 M parameters
    (upsample="transposed"; ≈0.18 M with "resize").
    """

    def __init__(
        self, latent_dim: int, image_size: int = 28, channels: int = 1, width: int = 32, upsample: str = "transposed"
    ) -> None:
        super().__init__()
        check_generator_args(latent_dim, channels, width, min_width=1)
        coarse, steps = _coarse_size(image_size)
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        top = width * 2 ** (steps - 1)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * coarse * coarse, bias=False),
            nn.Unflatten(1, (top, coarse, coarse)),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = top
        for _ in range(steps - 1):
            blocks += [
                upsample2x(c, c // 2, upsample, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        self.upsample = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(upsample2x(c, channels, upsample), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) → images (B, channels, image_size, image_size) in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.to_image(self.upsample(self.project(z)))


class DCGANEncoder(nn.Module):
    """Mirror image of `DCGANGenerator`: images (B, channels, S, S) → (B, out_features).

    Stride-2 4×4 convolutions halve the resolution and double the width (C → width →
    2·width → … → width·2^(k-1) channels at s₀×s₀, for S = s₀·2^k), each followed by
    LeakyReLU(0.2), then one linear layer. The VAE's encoder (out_features = 2·d: μ and
    log σ²) and the GAN's discriminator (out_features = 1: a logit) are both this network.

    norm: "batch" puts BatchNorm after every convolution but the first (as in the DCGAN
    discriminator) or "none". spectral_norm wraps every convolution and the linear layer in
    `torch.nn.utils.parametrizations.spectral_norm` (Miyato et al. 2018).
    """

    def __init__(
        self,
        out_features: int,
        image_size: int = 28,
        channels: int = 1,
        width: int = 32,
        norm: str = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        coarse, steps = _coarse_size(image_size)
        self.image_size, self.channels, self.out_features = image_size, channels, out_features
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, c_out = channels, width
        for step in range(steps):
            use_norm = norm == "batch" and step > 0
            layers.append(wrap(nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=not use_norm)))
            if use_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, c_out = c_out, c_out * 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = wrap(nn.Linear(c_in * coarse * coarse, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, channels, image_size, image_size) → (B, out_features)."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.head(self.features(x))


def build_encoder(
    image_shape: tuple[int, int, int], out_features: int, width: int, norm: str = "batch", spectral_norm: bool = False
) -> DCGANEncoder:
    """`DCGANEncoder` for images of shape (C, H, W) with H == W."""
    channels, height, width_px = image_shape
    if height != width_px:
        raise ValueError(f"square images expected, got image_shape={tuple(image_shape)}")
    return DCGANEncoder(out_features, image_size=height, channels=channels, width=width, norm=norm, spectral_norm=spectral_norm)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions with GroupNorm + SiLU; keeps the spatial size."""
    groups = min(8, c_out)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
    )


class UNetGenerator(nn.Module):
    """U-Net generator: (B, latent_dim) → (B, channels, image_size, image_size) in [-1, 1].

    image_size must be a multiple of 16 (32, 64, 128, …). Channel widths: `width` at the
    coarse map (size/4), 2·width and 4·width on the way down; width/2 at full size. `upsample`
    is how its four ×2 upsamplings are done (see the module doc).
    """

    def __init__(
        self, latent_dim: int, image_size: int = 64, channels: int = 1, width: int = 64, upsample: str = "transposed"
    ) -> None:
        super().__init__()
        check_generator_args(latent_dim, channels, width, min_width=2)
        if image_size % 16 or image_size < 32:
            raise ValueError(f"image_size={image_size} is not supported by the U-Net generator: use a multiple of 16, >= 32")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        coarse, w = image_size // 4, width
        self.project = nn.Sequential(nn.Linear(latent_dim, w * coarse * coarse), nn.Unflatten(1, (w, coarse, coarse)), nn.SiLU())
        self.enc0 = _conv_block(w, w)  # coarse
        self.enc1 = _conv_block(w, 2 * w)  # coarse / 2
        self.mid = _conv_block(2 * w, 4 * w)  # coarse / 4
        self.up1 = upsample2x(4 * w, 2 * w, upsample)
        self.dec1 = _conv_block(4 * w, 2 * w)  # [up, skip enc1]
        self.up0 = upsample2x(2 * w, w, upsample)
        self.dec0 = _conv_block(2 * w, w)  # [up, skip enc0]
        half = max(w // 2, 2)
        self.to_full = nn.Sequential(
            upsample2x(w, w, upsample), nn.GroupNorm(min(8, w), w), nn.SiLU(),
            upsample2x(w, half, upsample), nn.GroupNorm(min(8, half), half), nn.SiLU(),
            nn.Conv2d(half, channels, 3, padding=1), nn.Tanh(),
        )
        self.down = nn.AvgPool2d(2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) → images (B, channels, image_size, image_size) in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        e0 = self.enc0(self.project(z))
        e1 = self.enc1(self.down(e0))
        m = self.mid(self.down(e1))
        d1 = self.dec1(torch.cat([self.up1(m), e1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], dim=1))
        return self.to_full(d0)


GENERATORS = {"dcgan": DCGANGenerator, "unet": UNetGenerator}


def check_generator_settings(name: str, latent_dim: int, upsample: str) -> None:
    """ValueError unless a generator can be built with these settings for some image shape: a
    name of `GENERATORS`, latent_dim ≥ 1, an upsample of `UPSAMPLES` (for models' constructors,
    before the data's image shape is known)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {sorted(GENERATORS)}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    check_upsample(upsample)


def build_generator(
    name: str, latent_dim: int, image_shape: tuple[int, int, int], width: int, upsample: str = "transposed"
) -> nn.Module:
    """Generator by name for images of shape (C, H, W) with H == W; `upsample`: see the module doc."""
    check_generator_settings(name, latent_dim, upsample)
    channels, height, width_px = image_shape
    if height != width_px:
        raise ValueError(f"square images expected, got image_shape={tuple(image_shape)}")
    return GENERATORS[name](latent_dim=latent_dim, image_size=height, channels=channels, width=width, upsample=upsample)
