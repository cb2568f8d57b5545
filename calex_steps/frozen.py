"""The frozen backbone as later stages see it: loaded in eval mode with its classifier."""

from __future__ import annotations

import torch
from torch import nn

from calex_steps.backbones import build_backbone, classifier_module
from calex_steps.io import CalexError


def load_checkpoint(path) -> dict:
    """A calex checkpoint dict, with a clear error when the file is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CalexError(
            f"cannot read checkpoint {path} ({exc}); rerun the rule that writes it"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CalexError(
            f"{path} is not a calex checkpoint (no 'state_dict'); rerun the rule that writes it"
        )
    return ckpt


def load_frozen_backbone(path, device) -> tuple[nn.Module, dict]:
    """The backbone of ``backbone.pt`` in eval mode with gradients off, and its metadata."""
    ckpt = load_checkpoint(path)
    model = build_backbone(ckpt["arch"], ckpt["width"], ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval().requires_grad_(False)
    return model.to(device), ckpt


def load_classifier(model: nn.Module, probe_path, device) -> nn.Linear:
    """The task classifier: the coarse probe when given, else the backbone's own."""
    if not probe_path:
        return classifier_module(model)[1]
    ckpt = load_checkpoint(probe_path)
    layer = nn.Linear(ckpt["in_features"], ckpt["num_classes"])
    layer.load_state_dict(ckpt["state_dict"])
    return layer.eval().requires_grad_(False).to(device)
