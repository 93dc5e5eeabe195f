"""The settings the tests' small NeuroSQL models share.

A tiny network (d = 4, width 8, m = 16) with a pixel MSE loss, random blocks, a random
initial π and fresh costs, stated here rather than taken from the constructor's defaults (the
recommended configuration, which may change): a test that needs another setting says so.
"""

from __future__ import annotations

from typing import Any

SMALL_NEUROSQL: dict[str, Any] = dict(
    latent_dim=4, generator_width=8, block_size=16, perceptual=None, pixel="l2", block_strategy="random", init="random",
    cost_outputs="fresh",
)
