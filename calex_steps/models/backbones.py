"""Backbones, checkpoint loading and feature taps (docs/method.md#backbone).

Three families are built by name through ``build_backbone``:

- ``resnet18`` / ``resnet50``: CIFAR ResNets (3×3 stride-1 stem, no max-pool,
  stages ``layer1..layer4``, projection shortcuts, final ``fc``). ``width``
  scales every stage's channels.
- ``resnet20/32/44/56/110``: the He et al. (2016) CIFAR family (3 stages of
  16/32/64 channels, parameter-free zero-padding shortcuts, final ``linear``).
  Module names match the public CIFAR-10 checkpoints of this family.
- ``torchvision:<name>``: any torchvision classification model, built without
  weights (bring your own checkpoint: ``models.checkpoints.load_weights``);
  ``width`` narrows the torchvision ResNets only. Attach points are module
  names; ``python -m calex_steps.backbones --list-attach-points
  torchvision:<name>`` lists them (``models.attach_points``).

This module only builds networks and finds modules in them by name; loading
weights is ``models.checkpoints``, running them ``models.inference``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.errors import CalexError

# Input normalisation of the He-family CIFAR-10 checkpoints (images in [0, 1]).
HE_MEAN = (0.485, 0.456, 0.406)
HE_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "torchvision:"


def scale_channels(channels: int, width: float) -> int:
    """Channels of a stage after the width multiplier: rounded, at least 1."""
    return max(1, int(round(channels * width)))


class PadShortcut(nn.Module):
    """Option-A shortcut: spatial subsampling by ``stride`` and zero channels on both sides.

    The extra ``out_ch - in_ch`` channels are split evenly before and after the
    input channels (the layout the public He-family checkpoints were trained with).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_ch - in_ch) // 2
        self.pad_after = out_ch - in_ch - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # N×in×H/s×W/s
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # N×out×H/s×W/s


def _shortcut(in_ch: int, out_ch: int, stride: int, kind: str) -> nn.Module:
    """Identity when shapes agree, else a 1×1 projection (``proj``) or zero padding (``pad``)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(in_ch, out_ch, stride)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection; the first carries the stride."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_ch, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride), 1×1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet: 3×3 stride-1 stem, stages ``layer1..layerS``, average pool, linear classifier.

    ``stage_planes[0]`` is also the stem width; stage i > 0 halves the resolution.
    The classifier is stored under ``classifier_name`` (``fc`` or ``linear``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: Sequence[int],
        stage_planes: Sequence[int],
        num_classes: int,
        shortcut: str,
        classifier_name: str = "fc",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stage_planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_planes[0])
        in_ch = stage_planes[0]
        self.stage_names = []
        for i, (n_blocks, planes) in enumerate(zip(blocks_per_stage, stage_planes, strict=True)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, planes, stride, shortcut))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier_name = classifier_name
        self.add_module(classifier_name, nn.Linear(in_ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # N×C0×H×W
        for name in self.stage_names:
            out = getattr(self, name)(out)
        out = self.avgpool(out).flatten(1)  # N×F
        return getattr(self, self.classifier_name)(out)  # N×num_classes


# name -> (block, blocks per stage, stage planes at width 1, shortcut kind, classifier name)
_CIFAR_SPECS: dict[str, tuple] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), "proj", "fc"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), "proj", "fc"),
}
# He et al. CIFAR family: depth = 6n + 2, n BasicBlocks in each of 3 stages.
_CIFAR_SPECS.update(
    {
        f"resnet{depth}": (BasicBlock, ((depth - 2) // 6,) * 3, (16, 32, 64), "pad", "linear")
        for depth in (20, 32, 44, 56, 110)
    }
)

KNOWN_ARCHS = (*_CIFAR_SPECS, f"{TORCHVISION_PREFIX}<name>")


def _build_torchvision(name: str, width: float, num_classes: int) -> nn.Module:
    """A torchvision classification model by name, random weights (nothing is downloaded)."""
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise CalexError(
            f"torchvision has no classification model '{name}'; use one of: {', '.join(available)}"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if width == 1.0:
        return model
    if not isinstance(model, torchvision.models.ResNet):
        raise CalexError(
            f"width {width} applies to calex's CIFAR ResNets and torchvision ResNets only; "
            f"set width: 1.0 for '{TORCHVISION_PREFIX}{name}'"
        )
    return _narrow_resnet(model, width, num_classes)


def _narrow_resnet(model: nn.Module, width: float, num_classes: int) -> nn.Module:
    """A torchvision ResNet rebuilt with every stage's channels (and the stem's) scaled by
    ``width``: same class, same module names, so checkpoints and the cascade split still fit."""
    from torchvision.models.resnet import BasicBlock as TvBasic

    block = type(model.layer1[0])
    stem = scale_channels(64, width)
    model.inplanes = stem
    model.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(stem)
    for i, planes in enumerate((64, 128, 256, 512)):
        depth = len(getattr(model, f"layer{i + 1}"))
        layer = model._make_layer(block, scale_channels(planes, width), depth, stride=min(i, 1) + 1)
        setattr(model, f"layer{i + 1}", layer)
    expansion = 1 if block is TvBasic else 4
    model.fc = nn.Linear(scale_channels(512, width) * expansion, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def build_backbone(arch: str, width: float = 1.0, num_classes: int = 10) -> nn.Module:
    """Build an untrained backbone by name (see the module docstring for the names).

    For the CIFAR ResNets every stage's channels (and the stem's) are
    ``scale_channels(c, width)``; a Bottleneck's output is 4× its scaled planes.
    """
    if width <= 0:
        raise CalexError(f"width must be positive, got {width}")
    if num_classes < 1:
        raise CalexError(f"num_classes must be at least 1, got {num_classes}")
    if arch.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(arch[len(TORCHVISION_PREFIX) :], width, num_classes)
    if arch not in _CIFAR_SPECS:
        raise CalexError(f"unknown backbone arch '{arch}'; known: {', '.join(KNOWN_ARCHS)}")
    block, depths, planes, shortcut, cls_name = _CIFAR_SPECS[arch]
    scaled = [scale_channels(p, width) for p in planes]
    return CifarResNet(block, depths, scaled, num_classes, shortcut, cls_name)


def classifier_module(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final linear layer and its dotted name: ``fc``, ``linear``, or the last Linear
    of ``classifier``; failing those, the last ``nn.Linear`` registered in the model."""
    for name in ("fc", "linear", "classifier"):
        candidate = getattr(model, name, None)
        if isinstance(candidate, nn.Linear):
            return name, candidate
        if name == "classifier" and isinstance(candidate, nn.Module):
            linears = [(n, m) for n, m in candidate.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                return f"classifier.{linears[-1][0]}", linears[-1][1]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CalexError(
            f"{type(model).__name__} has no nn.Linear classifier; calex needs a backbone "
            "that ends in a linear layer (fc, linear or classifier)"
        )
    return linears[-1]


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted ``name``; an unknown name raises a CalexError that lists
    the children of the deepest existing parent (the top-level children at worst)."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    parts = name.split(".")
    parent = next(
        (
            ".".join(parts[:i])
            for i in range(len(parts) - 1, 0, -1)
            if ".".join(parts[:i]) in modules
        ),
        "",
    )
    children = [f"{parent}.{c}" if parent else c for c, _ in modules[parent].named_children()]
    where = f"under '{parent}'" if parent else "at the top level"
    raise CalexError(
        f"attach point '{name}' is not a module of {type(model).__name__}; "
        f"valid names {where}: {', '.join(children)}"
    )
