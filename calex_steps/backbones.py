"""Backbones, checkpoint loading and feature taps (SPEC sections 3 and 12).

Three families are built by name through ``build_backbone``:

- ``resnet18`` / ``resnet50``: CIFAR ResNets (3×3 stride-1 stem, no max-pool,
  stages ``layer1..layer4``, projection shortcuts, final ``fc``). ``width``
  scales every stage's channels.
- ``resnet20/32/44/56/110``: the He et al. (2016) CIFAR family (3 stages of
  16/32/64 channels, parameter-free zero-padding shortcuts, final ``linear``).
  Module names match the public CIFAR-10 checkpoints of this family.
- ``torchvision:<name>``: any torchvision classification model, built without
  weights (bring your own checkpoint through ``load_weights``).

Training code lives elsewhere; this module only builds, loads and observes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.io import CalexError

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
    if width != 1.0:
        raise CalexError(
            f"width {width} applies only to calex's CIFAR ResNets; "
            f"set width: 1.0 for '{TORCHVISION_PREFIX}{name}'"
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


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


class FeatureTap:
    """Context manager that records, during forward passes, the outputs of named
    modules (``features[name]``, e.g. N×d×H×W) and the classifier's input
    (``penultimate``, N×F). Hooks are removed on exit; grad mode is the caller's."""

    def __init__(self, model: nn.Module, attach_points: Iterable[str]) -> None:
        self.attach_points = tuple(attach_points)
        self._targets = {name: resolve_module(model, name) for name in self.attach_points}
        self.classifier_name, self._classifier = classifier_module(model)
        self.features: dict[str, torch.Tensor] = {}
        self.penultimate: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> FeatureTap:
        for name, module in self._targets.items():
            self._handles.append(module.register_forward_hook(self._recorder(name)))
        self._handles.append(self._classifier.register_forward_pre_hook(self._record_input))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.features[name] = output

        return hook

    def _record_input(self, module: nn.Module, inputs: tuple) -> None:
        self.penultimate = inputs[0].flatten(1)  # N×F


def run_with_taps(
    model: nn.Module, x: torch.Tensor, attach_points: Sequence[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One forward pass of ``x`` (N×3×H×W) returning (features by attach point in the
    given order, penultimate N×F, logits N×C). Mode and grad are the caller's."""
    with FeatureTap(model, attach_points) as tap:
        logits = model(x)
    missing = [name for name in attach_points if name not in tap.features]
    if missing or tap.penultimate is None:
        raise CalexError(
            f"attach points {missing or '(classifier)'} did not run in the forward pass of "
            f"{type(model).__name__}; choose modules the forward pass calls"
        )
    return {name: tap.features[name] for name in attach_points}, tap.penultimate, logits


def preprocess(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N×H×W×3 RGB -> float32 N×3×H×W: ``(images / 255 - mean) / std`` per channel,
    on the device of ``images``."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise CalexError(
            f"preprocess expects uint8 images N×H×W×3, got {images.dtype} "
            f"{tuple(images.shape)}; pass the 'images' array of the prepared file"
        )
    x = images.permute(0, 3, 1, 2).to(torch.float32).div(255.0)  # N×3×H×W in [0, 1]
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def _extract_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: itself, or its 'state_dict' / 'model' entry."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CalexError(
            f"{source}: no state dict found; expected a mapping of tensors or a dict "
            "holding one under 'state_dict' or 'model'"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _first_mismatch(expected: Mapping, given: Mapping) -> tuple[str, int]:
    """Describe the first key that differs (model order, then file order) and count all."""
    problems = []
    for key, tensor in expected.items():
        if key not in given:
            problems.append(f"missing key '{key}' (model expects shape {tuple(tensor.shape)})")
        elif given[key].shape != tensor.shape:
            problems.append(
                f"shape mismatch at '{key}': checkpoint {tuple(given[key].shape)}, "
                f"model {tuple(tensor.shape)}"
            )
    problems += [f"unexpected key '{key}'" for key in given if key not in expected]
    return (problems[0] if problems else ""), len(problems)


def load_weights(model: nn.Module, path_or_state_dict: str | PathLike | Mapping) -> nn.Module:
    """Load a checkpoint into ``model`` strictly and return the model.

    Accepts a file path or an in-memory dict: a raw state dict, or a dict holding
    one under 'state_dict' (or 'model'); a leading ``module.`` is stripped. A
    missing BatchNorm ``num_batches_tracked`` counter is tolerated (older files
    lack it). Any other difference raises a one-line CalexError naming the first
    mismatching key and the source.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "<state dict>", path_or_state_dict
    else:
        source = str(path_or_state_dict)
        if not Path(source).is_file():
            raise CalexError(f"backbone checkpoint '{source}' does not exist; check the path")
        try:
            raw = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors have many types
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CalexError(f"{source}: cannot be read by torch.load ({first_line})") from exc
    state = _extract_state_dict(raw, source)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = tensor
    problem, count = _first_mismatch(expected, state)
    if problem:
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise CalexError(
            f"{source} does not fit {type(model).__name__}: {problem}{more}; "
            "check the arch, width and num_classes the checkpoint was trained with"
        )
    model.load_state_dict(state, strict=True)
    return model
