"""The MAC counter of the public API (docs/api.md); the code is in ``calex_steps.models.flops``."""

from calex_steps.models.flops import count_macs, model_stage_macs, stage_macs

__all__ = ["count_macs", "model_stage_macs", "stage_macs"]
