"""NeuroSQL: generative modelling by quantile assignment, as a PyTorch Lightning library.

The method lives in a few files: `lattice.py` (the quantile lattice Q), `assignment.py`
(block-local linear assignment of samples to lattice points), `costs.py` + `losses.py`
(the loss ℓ and its cost matrices in GEMM form), `networks.py` (generators), `module.py`
(the `NeuroSQL` LightningModule), `assignment_costs.py` (the cost side of the assignment step:
feature banks and block costs) and `assignment_callback.py` (the epoch-boundary assignment
step).
"""

from typing import Any

__all__ = ["NeuroSQL"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a light submodule (lattice, assignment) does not import Lightning.
    if name == "NeuroSQL":
        from neurosql_pl.module import NeuroSQL

        return NeuroSQL
    raise AttributeError(f"module 'neurosql_pl' has no attribute {name!r}")
