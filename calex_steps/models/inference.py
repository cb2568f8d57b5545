"""Running a frozen backbone: preprocessing, feature taps at attach points, accuracy,
penultimate features, and the per-batch entries of the feature cache."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from calex_steps.data.feature_cache import use_gram
from calex_steps.data.prepared import read_arrays
from calex_steps.errors import CalexError
from calex_steps.models.backbones import classifier_module, resolve_module
from calex_steps.models.exit_heads import pooled_features
from calex_steps.models.gram import pack_gram


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


@torch.no_grad()
def forward_order(model: nn.Module, names: Sequence[str], image_side: int) -> list[str]:
    """``names`` in the order the forward pass reaches them (one blank image through the
    model, in eval mode), whatever order they were given in."""
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_side, image_side, dtype=param.dtype, device=param.device)
    with FeatureTap(model, names) as tap:
        model(x)
    missing = [name for name in names if name not in tap.features]
    if missing:
        raise CalexError(f"attach points {missing} never ran in the forward pass; choose others")
    return [name for name in tap.features if name in names]


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


def as_uint8_tensor(rows) -> torch.Tensor:
    """Rows read from a tensor or from an HDF5 dataset / numpy array, as a uint8 tensor."""
    return rows if torch.is_tensor(rows) else torch.from_numpy(np.ascontiguousarray(rows))


def _batches(images, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, uint8 batch) over ``images``: a tensor, or an HDF5 dataset read slice by slice."""
    for start in range(0, len(images), batch_size):
        yield start, as_uint8_tensor(images[start : start + batch_size])


@torch.no_grad()
def evaluate(model, images, labels, norm, device, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8 images (a tensor or an HDF5
    dataset, read one batch at a time)."""
    model.eval()
    correct = 0
    for start, batch in _batches(images, batch_size):
        x = preprocess(batch.to(device), norm["mean"], norm["std"])
        correct += (model(x).argmax(1).cpu() == labels[start : start + len(batch)]).sum().item()
    return correct / max(len(images), 1)


@torch.no_grad()
def penultimate_features(model, images, norm: dict, device, batch_size: int = 256):
    """Frozen penultimate features (N×F, float32, on ``device``) of uint8 images (a tensor
    or an HDF5 dataset, read one batch at a time)."""
    chunks = []
    for _, batch in _batches(images, batch_size):
        x = preprocess(batch.to(device), norm["mean"], norm["std"])
        chunks.append(run_with_taps(model, x, [])[1])
    return torch.cat(chunks)


@torch.no_grad()
def extract_batch(model, classifier, images, norm, attach, device):
    """Logits (float32 numpy N×C) and feature maps by attach point of one uint8 batch."""
    x = preprocess(images.to(device), norm["mean"], norm["std"])
    feats, penultimate, _ = run_with_taps(model, x, attach)
    return classifier(penultimate).float().cpu().numpy(), feats


def cache_entries(feats: dict[str, torch.Tensor], attach: dict[str, list[str]]) -> list[tuple]:
    """What the feature cache stores for one batch: ``(point number, form, kind, float32
    array)`` per attach point (1-based, in ``attach``'s order) and form (``HEAD_FORMS``).

    ``proto`` is the packed Gram or the raw map, whichever is smaller; ``pooled`` SDN's max-
    and average-pooled maps (``models.exit_heads.pooled_features``); ``map`` the raw map, left
    out where ``proto`` already stored it.
    """
    entries = []
    for num, (name, forms) in enumerate(attach.items(), start=1):
        fmap = feats[name]
        gram = use_gram(*fmap.shape[1:])
        for form in forms:
            if form == "proto":
                entries.append((num, form, "gram" if gram else "map",
                                pack_gram(fmap) if gram else fmap))  # fmt: skip
            elif form == "pooled":
                entries.append((num, form, "pooled", pooled_features(fmap)))
            elif not (form == "map" and "proto" in forms and not gram):
                entries.append((num, form, "map", fmap))
    return [(n, f, k, e.float().cpu().numpy()) for n, f, k, e in entries]


@contextlib.contextmanager
def open_split(path, split: str, label_key: str):
    """``(images, labels)`` of one split of ``prepared.h5`` without reading the pixels: the
    images stay an HDF5 dataset (uint8 N×H×W×3, sliced batch by batch), the labels a tensor."""
    import h5py

    read_arrays(path, split, ())  # one-line errors for a missing file or split
    with h5py.File(path, "r") as f:
        if "images" not in f[split] or label_key not in f[split]:
            raise CalexError(f"{path} split '{split}' lacks images or {label_key}; rerun prepare")
        yield f[split]["images"], torch.from_numpy(f[split][label_key][()])


def image_size(path) -> int:
    """Side of the prepared images (32 for the CIFAR sources)."""
    import h5py

    read_arrays(path, "test", ())  # one-line errors for a missing file or split
    with h5py.File(path, "r") as f:
        return int(f["test"]["images"].shape[1])


def load_split(path, split: str, label_key: str,
               rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Images (uint8 N×H×W×3) and labels (``labels`` or ``fine_labels``) of one split of
    ``prepared.h5`` (its first ``rows`` samples when given), as CPU tensors."""
    images, labels = read_arrays(path, split, ("images", label_key), rows)
    return torch.from_numpy(images), torch.from_numpy(labels)


def chance_ceiling(num_classes: int) -> float:
    """The accuracy at or under which a classifier counts as near chance: twice chance,
    2/C (for two classes, where that is every image, 75%)."""
    return 0.75 if num_classes <= 2 else 2.0 / num_classes


def refuse_near_chance(accuracy: float, num_classes: int, what: str, input_size: int,
                       normalization: dict) -> None:  # fmt: skip
    """Stop with one line when ``what`` (an imported checkpoint, or its probe) scores at
    most ``chance_ceiling`` on the validation split, naming the usual causes and the values
    in force; ``backbones.<key>.accept_near_chance`` lets the run go on."""
    ceiling = chance_ceiling(num_classes)
    if accuracy > ceiling:
        return
    mean = [round(v, 4) for v in normalization["mean"]]
    std = [round(v, 4) for v in normalization["std"]]
    raise CalexError(
        f"{what} scores {accuracy:.1%} on the validation split, near chance ({num_classes} "
        f"classes: at most {ceiling:.1%}); likely causes: the images are prepared at "
        f"{input_size}×{input_size} but the checkpoint was trained at another size (set "
        f"datasets.<key>.image_size), its normalization is not mean {mean} std {std} "
        "(backbones.<key>.normalization), or the class folders are not in the order of its "
        "outputs; fix the cause, or set backbones.<key>.accept_near_chance: true to go on"
    )
