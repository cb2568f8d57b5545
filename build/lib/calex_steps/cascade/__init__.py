"""The cascade: the shared simulator and its cost (``simulate``), the margin sweep
(``sweep``), and the deployable module (``module``, ``build``, ``artifact``).

Only the numpy simulator is imported here, so ``import calex_steps.cascade``
stays light (no torch) for the sweep jobs.
"""

from calex_steps.cascade.simulate import (
    cascade_cost,
    flops_reduction,
    mean_cost,
    run_cascade,
)

__all__ = ["cascade_cost", "flops_reduction", "mean_cost", "run_cascade"]
