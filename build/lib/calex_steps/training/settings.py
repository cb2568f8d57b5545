"""Checking the resolved recipe settings a training stage receives (one place for the
keys every way of training shares)."""

from __future__ import annotations

import dataclasses

from calex_steps.errors import CalexError
from calex_steps.models.heads import HEAD_KINDS


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadSchedule:
    """The settings every way of training heads reads: head, target, prototypes, the two
    stages' epochs, Adam's learning rate and weight decay, the batch size."""

    head: str
    target: str
    prototypes: int
    cls_epochs: int
    conf_epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0


def keep_fields(settings: dict, cls, what: str, skip=lambda key: False) -> dict:
    """The keys of ``settings`` that are fields of dataclass ``cls``; ``skip(key)`` ones are
    dropped; any other key, or a required field that is absent, is a one-line error."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kept = {}
    for key, value in settings.items():
        if skip(key):
            continue
        if key not in fields:
            raise CalexError(f"unknown {what} setting '{key}'; remove it from the recipe")
        kept[key] = value
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.name not in kept:
            raise CalexError(f"{what} setting '{f.name}' is missing; set it in the config")
    return kept


def check_schedule(kept: dict, what: str, extra: dict | None = None) -> None:
    """Head kind, prototype count, epochs, batch size, learning rate and weight decay in range
    (plus ``extra`` name -> ok flags); the first bad one is a one-line error."""
    checks = {
        "head": kept["head"] in HEAD_KINDS,
        "prototypes": int(kept["prototypes"]) >= 1,
        "cls_epochs": int(kept["cls_epochs"]) >= 1,
        "conf_epochs": int(kept["conf_epochs"]) >= 1,
        "batch_size": int(kept["batch_size"]) >= 1,
        "lr": float(kept["lr"]) > 0,
        "weight_decay": float(kept.get("weight_decay", 0.0)) >= 0,
        **(extra or {}),
    }
    for key, ok in checks.items():
        if not ok:
            raise CalexError(f"{what} setting '{key}' has an invalid value {kept[key]!r}")
