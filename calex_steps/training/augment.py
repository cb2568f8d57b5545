"""Image augmentation for backbone pretraining, vectorised and seeded by a CPU generator."""

from __future__ import annotations

import math

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


def random_resized_crop_flip(
    x: torch.Tensor, scale: tuple[float, float], hflip: bool, gen: torch.Generator
) -> torch.Tensor:
    """Random-resized crop back to the input size, and random horizontal flip, vectorised.

    x: N×C×H×W float. Each sample gets a crop of area fraction in ``scale`` and
    aspect ratio (log-uniform) in [3/4, 4/3], at a uniform position inside the
    image, resampled bilinearly to H×W; a flip mirrors the sampling grid.
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = torch.exp(log_ratio)
    # crop width and height as fractions of the image's, at most the whole image
    cw = torch.sqrt(area * ratio).clamp(max=1.0)
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - cw)  # centre in [-1, 1] coordinates
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - ch)
    sign = torch.ones(n)
    if hflip:
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
