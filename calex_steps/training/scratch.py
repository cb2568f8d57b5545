"""Resumable training state: a scratch checkpoint beside a stage's output.

Every long training stage saves one after each epoch; a rerun with the same
settings (the same fingerprint) continues from it. It holds tensors and plain
values only (the model's and the optimizer's state dicts, the fingerprint, the
epoch) and is read back with the weights-only unpickler: a file that would need
to run code to load is refused, never loaded (docs/formats.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from calex_steps.errors import CalexError
from calex_steps.io import atomic_path
from calex_steps.models.checkpoints import safe_load


def scratch_path(out: str | os.PathLike) -> Path:
    """Where a training stage keeps its resumable state, beside its output."""
    out = Path(out)
    return out.with_name(out.name + ".scratch")


def save_scratch(out, state: dict) -> None:
    """Write the resumable state atomically (an interrupted write leaves the old one)."""
    with atomic_path(scratch_path(out)) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)  # through a handle: a full disk is an OSError


def load_scratch(out, fingerprint: dict) -> dict | None:
    """The saved state if it was made by the same settings, else None."""
    path = scratch_path(out)
    if not path.exists():
        return None
    fix = "delete it and the stage starts over"
    state = safe_load(path, "scratch file", fix)
    if not isinstance(state, dict):
        raise CalexError(f"scratch file {path} is not a calex training state; {fix}")
    if state.get("fingerprint") != fingerprint:
        return None
    return state


def drop_scratch(out) -> None:
    scratch_path(out).unlink(missing_ok=True)
