"""SPEC section 12 name of the MAC counter; the code lives in ``calex_steps.models.flops``."""

from calex_steps.models.flops import count_macs, model_stage_macs, stage_macs

__all__ = ["count_macs", "model_stage_macs", "stage_macs"]
