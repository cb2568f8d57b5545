"""Cost accounting: MACs counted on the model itself, the cost of a cascade (docs/method.md#flops).

Only convolutions and linear layers count (BatchNorm, activations, additions
and pooling are excluded). Counts are per sample: a batch of N inputs gives
the same number as a batch of one. What a cascade costs per exit, given
these counts, is numpy-only and lives in ``calex_steps.cascade``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from calex_steps.errors import CalexError
from calex_steps.models.backbones import build_backbone, resolve_module

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Per-sample MACs of one call of a convolution or linear ``module`` given its output.

    Convolution: output elements × in_channels/groups × kernel volume (covers
    grouped and depthwise). Linear: output elements × in_features. Anything else: 0.
    """
    if isinstance(module, _CONVS):
        batched = output.dim() == len(module.kernel_size) + 2
        per_sample = output.numel() // (output.shape[0] if batched else 1)
        kernel = math.prod(module.kernel_size)
        return per_sample * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        per_sample = output.numel() // (output.shape[0] if output.dim() >= 2 else 1)
        return per_sample * module.in_features
    return 0


@contextlib.contextmanager
def _mac_hooks(model: nn.Module, on_macs: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_macs(n)`` after every convolution / linear call inside ``model``."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        on_macs(layer_macs(module, output))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (*_CONVS, nn.Linear))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch-1 BatchNorm would fail in train mode) and no grad; restore the mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def count_macs(module: nn.Module, *example_inputs: torch.Tensor) -> int:
    """Per-sample conv + linear MACs of one forward pass of ``module(*example_inputs)``."""
    total = [0]

    def add(n: int) -> None:
        total[0] += n

    with _mac_hooks(module, add), _eval_no_grad(module):
        module(*example_inputs)
    return total[0]


def model_stage_macs(
    model: nn.Module, attach_points: Sequence[str], input_size: int = 32
) -> dict[str, int]:
    """Cumulative per-sample MACs of ``model`` when each attach point finishes, plus "total".

    One forward pass of a 1×3×input_size×input_size zero tensor (on the model's
    device); convolutions and linear layers add to a running sum in execution
    order, and each attach point records the sum when its forward returns.
    """
    running = [0]
    reached: dict[str, int] = {}

    def add(n: int) -> None:
        running[0] += n

    def marker(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            reached.setdefault(name, running[0])

        return hook

    handles = [
        resolve_module(model, name).register_forward_hook(marker(name)) for name in attach_points
    ]
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    try:
        with _mac_hooks(model, add), _eval_no_grad(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in attach_points if name not in reached]
    if missing:
        raise CalexError(f"attach points {missing} never ran in the forward pass; choose others")
    return {**{name: reached[name] for name in attach_points}, "total": running[0]}


def stage_macs(
    arch: str,
    width: float = 1.0,
    num_classes: int = 10,
    attach_points: Sequence[str] = ("layer1", "layer2", "layer3"),
    input_size: int = 32,
) -> dict[str, int]:
    """Cumulative MACs through each attach point and of the whole model with its
    classifier ("total"), for ``build_backbone(arch, width, num_classes)``."""
    model = build_backbone(arch, width=width, num_classes=num_classes)
    return model_stage_macs(model, attach_points, input_size=input_size)
