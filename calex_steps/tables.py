"""The FR interpolation of the public API (docs/api.md); the code is in calex_steps.reporting."""

from calex_steps.reporting.curves import interpolate_at_fr, interpolate_curve

__all__ = ["interpolate_at_fr", "interpolate_curve"]
