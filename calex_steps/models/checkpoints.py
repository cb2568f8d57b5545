"""Loading weights: a user's state dict into an architecture (strictly), and calex's own
checkpoints (``backbone.pt``, ``probe.pt``, ``branch{l}.pt``) with the frozen backbone."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from calex_steps import __version__
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path
from calex_steps.models.backbones import build_backbone, classifier_module


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
        raw = safe_load(
            source,
            "backbone checkpoint",
            "save the weights as a plain state dict (torch.save(model.state_dict(), path))",
        )
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


def checkpoint_classes(path) -> int | None:
    """Outputs of a user checkpoint's classifier (the last 2-d ``*.weight`` whose name
    says fc, linear, classifier or head), or None when it cannot tell."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = _extract_state_dict(raw, str(path))
    except Exception:  # load_weights reports an unreadable file in one line
        return None
    heads = [
        v
        for k, v in state.items()
        if k.endswith(".weight") and v.dim() == 2 and k.split(".")[0] in _HEAD_NAMES
    ]
    return int(heads[-1].shape[0]) if heads else None


_HEAD_NAMES = ("fc", "linear", "classifier", "head", "heads")


def reason_not_loaded(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it holds a Python object ({found.group(1)}), not only tensors and plain data"
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return first[:160]


def safe_load(path, what: str, fix: str) -> object:
    """``torch.load`` of a file calex wrote, with the weights-only unpickler: tensors,
    numbers, strings, lists and dicts load; anything else (a pickled object whose loading
    would run code) is refused with one line naming the file, why, and ``fix``. Never
    retried with the unrestricted unpickler."""
    if not Path(path).is_file():
        raise CalexError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and archive errors have many types
        raise CalexError(f"{what} {path} was refused: {reason_not_loaded(exc)}; {fix}") from exc


def tensor_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: every key, dtype, shape and the tensor's bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


REGENERATE = "delete it and rerun the rule that writes it"


def load_checkpoint(path) -> dict:
    """A calex checkpoint (``backbone.pt``, ``probe.pt``, ``branch{l}.pt``) loaded without
    running code, its tensors checked against the SHA-256 recorded at writing
    (docs/formats.md); one line naming the file when it is not one or is damaged."""
    ckpt = safe_load(path, "checkpoint", REGENERATE)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CalexError(f"{path} is not a calex checkpoint (no 'state_dict'); {REGENERATE}")
    recorded = ckpt.get("tensor_sha256")
    if recorded is not None and recorded != tensor_sha256(ckpt["state_dict"]):
        raise CalexError(
            f"checkpoint {path} is damaged: its tensors do not match the SHA-256 recorded "
            f"when it was written; {REGENERATE}"
        )
    return ckpt


def json_fields(fields: dict, path) -> dict:
    """``fields`` as JSON values (tuples become lists); a value JSON cannot hold is a bug
    of the writer, reported with the file it was meant for."""
    try:
        return json.loads(json.dumps(fields))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata of {path} is not JSON-serialisable: {exc}") from exc


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


def save_head(path, head: nn.Module, meta: dict) -> None:
    """Write a trained branch head as ``branch{l}.pt``: its config, CPU weights and ``meta``."""
    _save(path, head, {"head_config": head.config, **meta})


def save_checkpoint(path, module: nn.Module, **fields) -> dict:
    """Write a calex checkpoint (``backbone.pt``, ``probe.pt``) atomically: ``fields``, the
    module's CPU weights under ``state_dict`` and the calex version. Returns the dict."""
    return _save(path, module, {**fields, "calex_version": __version__})


def _save(path, module: nn.Module, fields: dict) -> dict:
    """``fields`` (as JSON values), the CPU weights and their SHA-256, written atomically."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt = {**json_fields(fields, path), "state_dict": state, "tensor_sha256": tensor_sha256(state)}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a full disk: an OSError
        torch.save(ckpt, handle)
    return ckpt
