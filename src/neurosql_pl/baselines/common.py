"""What the baselines share: networks built at `setup` from the datamodule's image shape.

`ImageModelBase` is a `generative_model.GenerativeModel` (the EMA, `sampling_network()`, the
datamodule lookup) whose networks depend on the image shape alone. Like `NeuroSQL`, a baseline
takes `image_shape: (C, H, W) | None`. When it is None the networks are built in `setup()`
from the trainer's datamodule (`datamodule.image_shape`) and the shape is written into the
hyper-parameters, so `load_from_checkpoint` rebuilds the same networks before loading their
weights. Batches are (images (B, C, H, W) in [-1, 1], indices).
"""

from __future__ import annotations

from ..generative_model import GenerativeModel
from .unet_denoiser import count_parameters

__all__ = ["ImageModelBase", "count_parameters"]


class ImageModelBase(GenerativeModel):
    """Base of the baselines: subclasses call `save_hyperparameters()` (with an `image_shape`
    argument) and implement `_build(image_shape)`, which creates their networks (and calls
    `build_ema()` once the trained one exists)."""

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        raise NotImplementedError

    @property
    def built(self) -> bool:
        return self.hparams.get("image_shape") is not None and getattr(self, "_built", False)

    def _build_for(self, image_shape: tuple[int, int, int]) -> None:
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        self._build(image_shape)
        self.hparams.image_shape = image_shape
        self._built = True

    def setup(self, stage: str) -> None:
        """Build the networks for the datamodule's image shape (or check a built model against it)."""
        shape = getattr(self.datamodule, "image_shape", None)
        if shape is None:
            if not self.built:
                raise RuntimeError(f"{type(self).__name__} needs a datamodule with `image_shape` (or image_shape given)")
            return
        shape = tuple(int(s) for s in shape)
        if not self.built:
            self._build_for(shape)
        elif shape != tuple(self.hparams.image_shape):
            raise ValueError(
                f"the model was built for images of shape {tuple(self.hparams.image_shape)}, but the data has {shape}; "
                "use the same dataset settings (image_size, channels) as the checkpoint"
            )
