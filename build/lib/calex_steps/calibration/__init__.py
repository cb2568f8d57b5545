"""Calibration targets: how a branch's per-class thresholds are set (SPEC section 7).

``cpm`` is the paper's Class Precision Margin. A new target is a module here
with the same signature as ``cpm_thresholds``, registered in the sweep.
numpy only.
"""

from calex_steps.calibration.cpm import (
    NEVER_EXIT,
    calibrate_cascade,
    cpm_thresholds,
    reference_precision,
)

__all__ = ["NEVER_EXIT", "calibrate_cascade", "cpm_thresholds", "reference_precision"]
