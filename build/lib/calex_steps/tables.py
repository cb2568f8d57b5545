"""SPEC section 12 name of the FR interpolation; the code lives in ``calex_steps.reporting``."""

from calex_steps.reporting.curves import interpolate_at_fr, interpolate_curve

__all__ = ["interpolate_at_fr", "interpolate_curve"]
