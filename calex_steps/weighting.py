"""The survivor weights of the public API (docs/api.md); the code is in ``calex_steps.training``."""

from calex_steps.training.weighting import sample_indices, survivor_weights

__all__ = ["sample_indices", "survivor_weights"]
