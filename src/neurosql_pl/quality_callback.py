"""Sample quality while a model trains: FID and KID every k epochs (`SampleQuality`).

Every `every_n_epochs` epochs (and after the last one) the callback draws `n` samples with a fixed
seed (the model's `sample`, so with its EMA weights when it keeps them), embeds them with the
offline Inception network of `features.py` and scores them against `n` held-out images of the
datamodule (their statistics cached as `evaluate` caches them). It logs

  val/fid, val/kid      to every logger (W&B included) and to metrics.json (via callback_metrics)

and appends {epoch, step, fid, kid, kid_std, seconds} to `<run>/quality.json`. A ModelCheckpoint
with `monitor: val/kid, mode: min` then keeps the best model by KID.

Cost: n Inception passes per check, ≈0.14–0.4 s per image on a 2-core CPU (n = 500: 1–3 min),
milliseconds on a GPU; the trainer piece `gpu.yaml` turns it on, the CPU default leaves it off.
With several processes (DDP) rank 0 scores and broadcasts the values, so every rank logs the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .distribution_metrics import feature_metrics
from .evaluate import draw_samples, real_stats
from .features import FeatureName, build_feature_extractor, extract_features
from .files import write_json_atomic
from .run_folder import dataset_images, heldout_dataset

__all__ = ["SampleQuality", "QUALITY_FILE"]

QUALITY_FILE = "quality.json"


class SampleQuality(L.Callback):
    """Logs val/fid and val/kid of n samples against n held-out images every k epochs.

    Args:
        every_n_epochs: score after every k-th epoch (and after the last), k ≥ 1.
        n: samples and held-out images per score, ≥ 4 (KID subsets of n/2).
        features: inception (the real FID network) or random-conv (tests only: not meaningful).
        seed: seeds the samples' codes and the choice of held-out images.
        fid_method: eigh (fast) or torchmetrics.
        cache_dir: where the held-out statistics are cached (default ~/.cache/neurosql_pl/fid_stats).
        batch_size: images per network pass.
    """

    def __init__(self, every_n_epochs: int = 1, n: int = 500, features: FeatureName = "inception", seed: int = 0,
                 fid_method: str = "eigh", cache_dir: str | None = None, batch_size: int = 256) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be ≥ 1, got {every_n_epochs}")
        if n < 4:
            raise ValueError(f"n must be ≥ 4 (KID needs two subsets of n/2), got {n}")
        self.every_n_epochs, self.n, self.features, self.seed = every_n_epochs, n, features, seed
        self.fid_method, self.cache_dir, self.batch_size = fid_method, cache_dir, batch_size
        self.history: list[dict[str, Any]] = []
        self._extractor: torch.nn.Module | None = None
        self._real: Any = None

    def due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
        return epoch % self.every_n_epochs == 0 or last

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.due(trainer):
            return
        values = self.score(trainer, pl_module) if trainer.is_global_zero else None
        values = trainer.strategy.broadcast(values, src=0)
        pl_module.log("val/fid", values["fid"], on_epoch=True, sync_dist=False)
        pl_module.log("val/kid", values["kid"], on_epoch=True, sync_dist=False)
        if trainer.is_global_zero:
            self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **values})
            write_json_atomic({"n": self.n, "features": self.features, "history": self.history},
                              Path(trainer.default_root_dir) / QUALITY_FILE)

    @torch.no_grad()
    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """{fid, kid, kid_std, seconds} of n fresh samples against the held-out images."""
        began = time.perf_counter()
        device = pl_module.device
        if self._extractor is None:
            self._extractor = build_feature_extractor(self.features).eval()
        extractor = self._extractor.to(device)
        real = self.real_stats(trainer, extractor)
        samples = draw_samples(pl_module, self.n, self.seed, self.batch_size)
        fake = extract_features(extractor, samples, self.batch_size)
        m = feature_metrics(real, fake, kid_subsets=50, seed=self.seed, fid_method=self.fid_method)
        return {"fid": m["fid"], "kid": m["kid_mean"], "kid_std": m["kid_std"], "seconds": time.perf_counter() - began}

    def real_stats(self, trainer: L.Trainer, extractor: torch.nn.Module) -> Any:
        """FeatureStats of n held-out images (computed once per fit, cached on disk)."""
        if self._real is None:
            dm = trainer.datamodule
            held = heldout_dataset(dm)
            count = min(self.n, len(held))
            idx = torch.randperm(len(held), generator=torch.Generator().manual_seed(self.seed))[:count].sort().values
            self._real, _ = real_stats(dataset_images(held, idx), "test", extractor, type(dm).__name__, self.batch_size,
                                       self.cache_dir, use_cache=True, say=lambda _msg: None)
        return self._real

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
