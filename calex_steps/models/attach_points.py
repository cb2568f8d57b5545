"""The attach points a user can choose on a backbone, with the shape and cost at each
(listed by ``python -m calex_steps.backbones --list-attach-points ARCH``).

Candidates are the stages and blocks of a ResNet (``layer2``, ``layer2.1``) and
the numbered blocks of the torchvision models built as ``features`` (MobileNet,
EfficientNet, ConvNeXt: ``features.3``). Each line gives the map a branch would
see (channels × height × width at the input size) and the cumulative MACs of
the backbone up to there, counted by ``models.flops`` on one forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from calex_steps.errors import CalexError
from calex_steps.models.backbones import TORCHVISION_PREFIX, build_backbone
from calex_steps.models.flops import model_stage_macs

# Input side torchvision's ImageNet models are trained at; calex's CIFAR nets use 32.
TORCHVISION_INPUT = 224


def candidate_names(model: nn.Module) -> list[str]:
    """Module names after which a branch can attach, in forward order."""
    names = []
    for child, module in model.named_children():
        is_stage = child.startswith("layer") and isinstance(module, nn.Sequential)
        if is_stage:
            names += [f"{child}.{i}" for i in range(len(module) - 1)] + [child]
        elif child == "features" and isinstance(module, nn.Sequential):
            names += [f"features.{i}" for i in range(len(module))]
    return names


def default_input_size(arch: str) -> int:
    """The input side an arch is usually run at: 224 for torchvision models, else 32."""
    return TORCHVISION_INPUT if arch.startswith(TORCHVISION_PREFIX) else 32


def describe_attach_points(
    arch: str, width: float = 1.0, input_size: int | None = None, num_classes: int = 10
) -> list:
    """``[(name, (C, H, W), cumulative MACs)]`` per candidate, then ``("total", None, MACs)``."""
    size = input_size or default_input_size(arch)
    model = build_backbone(arch, width=width, num_classes=num_classes).eval()
    names = candidate_names(model)
    if not names:
        raise CalexError(f"{arch} has no stages (layerK) or features blocks to attach to")
    shapes: dict[str, tuple] = {}

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(output.shape[1:]))  # C×H×W

        return hook

    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(recorder(n)) for n in names]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    macs = model_stage_macs(model, names, input_size=size)
    return [(n, shapes[n], macs[n]) for n in names] + [("total", None, macs["total"])]
