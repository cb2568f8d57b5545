"""Shared pieces of the torch training loops: seeding, augmentation, schedules, scratch state."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from calex_steps.io import CalexError, atomic_path


def epoch_generator(seed: int, *tags: int) -> torch.Generator:
    """A CPU generator for one epoch, derived from the run seed and tags.

    Every source of randomness inside an epoch draws from it, so a run that
    resumes at epoch e sees exactly the draws an uninterrupted run would.
    """
    value = seed
    for tag in tags:
        value = (value * 1_000_003 + tag) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def random_crop_flip(
    x: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised.

    x: N×C×H×W float. Draws come from ``gen`` (CPU) so they do not depend on the device.
    """
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # N×1×H×1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # N×1×1×W
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base_lr`` at epoch 0 towards 0 at ``epochs``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Stop with a clear message on a NaN or infinite loss."""
    if not torch.isfinite(loss):
        raise CalexError(
            f"{where}: the loss became {loss.item()}; lower the learning rate "
            "(the 'lr' key of this stage) or check the input data"
        )


def scratch_path(out: str | os.PathLike) -> Path:
    """Where a training stage keeps its resumable state, beside its output."""
    out = Path(out)
    return out.with_name(out.name + ".scratch")


def save_scratch(out, state: dict) -> None:
    """Write the resumable state atomically (an interrupted write leaves the old one)."""
    with atomic_path(scratch_path(out)) as tmp:
        torch.save(state, tmp)


def load_scratch(out, fingerprint: dict) -> dict | None:
    """The saved state if it was made by the same settings, else None."""
    path = scratch_path(out)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a scratch file is disposable: start over
        return None
    if state.get("fingerprint") != fingerprint:
        return None
    return state


def drop_scratch(out) -> None:
    scratch_path(out).unlink(missing_ok=True)
