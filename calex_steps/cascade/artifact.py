"""The exported cascade: a TorchScript file that loads with ``torch.jit.load`` alone.

``save_artifact`` scripts a ``CascadeModel`` and stores ``calex.json`` (its
meta) beside it; ``load_artifact`` reads one back with clear errors.
docs/deploy.md explains why TorchScript and not ``torch.export``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from calex_steps.cascade.module import CascadeModel
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path

META_FILE = "calex.json"


def script_cascade(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """TorchScript of the cascade or one of its parts, in eval mode on its device (the
    deprecation warning of torch.jit is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.jit.script(model.eval())


def save_artifact(model: CascadeModel, out: str | Path) -> None:
    """Script ``model`` and save it atomically, with ``calex.json`` as an extra file."""
    scripted = script_cascade(model.cpu())
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: model.meta_json})


def load_artifact(path: str | Path) -> torch.jit.ScriptModule:
    """An exported cascade in eval mode; a clear error when the file is missing or not one."""
    if not Path(path).is_file():
        raise CalexError(
            f"model file {path} does not exist; pass the artifact export_cascade wrote"
        )
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.x; docs/deploy.md
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # TorchScript raises several error types for a bad archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CalexError(
            f"{path} is not a TorchScript cascade ({first[:120]}); rerun export_cascade"
        ) from exc
    if not hasattr(model, "class_names") or not hasattr(model, "meta_json"):
        raise CalexError(
            f"{path} is a TorchScript file but not a calex cascade; rerun export_cascade"
        )
    return model.eval()
