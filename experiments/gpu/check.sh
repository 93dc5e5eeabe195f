#!/usr/bin/env bash
# The GPU check (≤ 8 min on one GPU): synthetic 64 px images, NeuroSQL with the perceptual loss, 2 epochs
# under the GPU trainer piece; prints images/s, the assignment's share of the epoch and the peak memory.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s install
export WANDB_MODE=offline
.venv/bin/python -m experiments.gpu.check "$@"
