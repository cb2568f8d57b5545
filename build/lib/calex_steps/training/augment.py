"""Image augmentation for backbone pretraining, vectorised and seeded by a CPU generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
