"""The packed Gram form of a feature map, defined once (docs/method.md#feature-cache).

The cache writer stores it and the prototype head reads it, so both must
agree on the order (``numpy.triu_indices(d)``, row-major upper triangle) and
on the scale (mean over positions, not sum).
"""

from __future__ import annotations

import torch

from calex_steps.data.feature_cache import packed_size
from calex_steps.errors import CalexError


def pack_gram(maps: torch.Tensor) -> torch.Tensor:
    """Packed Gram matrices of feature maps.

    Args:
        maps: N×d×H×W feature maps (any float dtype, any device).

    Returns:
        N×d(d+1)/2 tensor, same dtype and device: the upper triangle, in
        ``numpy.triu_indices(d)`` order, of G = mean over the H·W positions of x xᵀ.
    """
    n, d, h, w = maps.shape
    x = maps.reshape(n, d, h * w)  # N×d×P
    gram = torch.bmm(x, x.transpose(1, 2)) / (h * w)  # N×d×d, mean over positions
    rows, cols = torch.triu_indices(d, d, device=maps.device)
    return gram[:, rows, cols]


def unpack_gram(packed: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`pack_gram`: N×d(d+1)/2 packed entries -> N×d×d symmetric G."""
    if packed.ndim != 2 or packed.shape[1] != packed_size(d):
        raise CalexError(
            f"packed Gram has shape {tuple(packed.shape)}, expected N×{packed_size(d)} for d={d}"
        )
    rows, cols = torch.triu_indices(d, d, device=packed.device)
    gram = packed.new_zeros(packed.shape[0], d, d)
    gram[:, rows, cols] = packed
    gram[:, cols, rows] = packed  # mirror; the diagonal is written twice with equal values
    return gram
