"""Calibration targets: how a branch's per-class thresholds are set (docs/calibration.md).

``cpm`` is the paper's Class Precision Margin (docs/method.md#calibration); ``matched`` compares
a branch with the backbone on the very samples it releases; ``agree`` needs no labels.
Each target is a module here with the signature of ``cpm_thresholds``, registered in
``targets.TARGETS``; ``targets.calibrate_margins`` sets a whole cascade's thresholds at
many margins at once. ``temperature`` fits a branch's softmax temperature. numpy only.
"""

from calex_steps.calibration.agree import agree_thresholds
from calex_steps.calibration.cpm import NEVER_EXIT, cpm_thresholds, reference_precision
from calex_steps.calibration.matched import matched_thresholds
from calex_steps.calibration.targets import (
    TARGETS,
    calibrate_cascade,
    calibrate_margins,
    get_target,
)

__all__ = [
    "NEVER_EXIT",
    "TARGETS",
    "agree_thresholds",
    "calibrate_cascade",
    "calibrate_margins",
    "cpm_thresholds",
    "get_target",
    "matched_thresholds",
    "reference_precision",
]
