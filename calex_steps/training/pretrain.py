"""One epoch of backbone pretraining: SGD with crop/flip augmentation (docs/method.md#backbone).

The training images are an HDF5 dataset (or a tensor) read one shuffling window
at a time (``epoch_windows``), so memory is bounded by ``shuffle_buffer_mb``,
not by the size of the split.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from calex_steps.data.prepared import image_chunk_rows
from calex_steps.models.inference import as_uint8_tensor, preprocess
from calex_steps.training.augment import random_crop_flip, random_resized_crop_flip
from calex_steps.training.loops import check_finite, epoch_generator


def epoch_windows(
    n: int, chunk_rows: int, window_rows: int, gen: torch.Generator
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Shuffled visiting order of ``n`` rows stored in chunks of ``chunk_rows``.

    Yields ``(rows, order)``: ``rows`` are sorted row numbers to read (whole
    chunks, about ``window_rows`` of them), ``order`` a permutation of
    ``range(len(rows))``. When the split fits one window this is one plain
    ``randperm(n)``; otherwise the chunks are visited in a random order, and the
    rows of each window of chunks are shuffled among themselves.
    """
    if n <= window_rows:
        yield np.arange(n), torch.randperm(n, generator=gen)
        return
    num_chunks = -(-n // chunk_rows)
    per_window = max(1, window_rows // chunk_rows)
    chunk_order = torch.randperm(num_chunks, generator=gen).numpy()
    for first in range(0, num_chunks, per_window):
        chunks = np.sort(chunk_order[first : first + per_window])
        rows = np.concatenate(
            [np.arange(c * chunk_rows, min(n, (c + 1) * chunk_rows)) for c in chunks]
        )
        yield rows, torch.randperm(len(rows), generator=gen)


def _read_rows(images, rows: np.ndarray) -> torch.Tensor:
    """Sorted rows of ``images`` (tensor or HDF5 dataset), read as contiguous runs."""
    if torch.is_tensor(images):
        return images[torch.from_numpy(rows)]
    out = torch.empty((len(rows), *images.shape[1:]), dtype=torch.uint8)  # one window, once
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    pos = 0
    for run in np.split(rows, breaks):
        out[pos : pos + len(run)] = as_uint8_tensor(images[run[0] : run[-1] + 1])
        pos += len(run)
    return out


def _augment(x, settings, gen):
    """The configured crop (``pad`` or ``resized``) and flip of a float batch N×3×H×W."""
    if settings.get("crop", "pad") == "resized":
        scale = tuple(settings.get("crop_scale", (0.35, 1.0)))
        return random_resized_crop_flip(x, scale, settings["hflip"], gen)
    return random_crop_flip(x, settings["crop_padding"], settings["hflip"], gen)


def train_epoch(
    model, optimizer, images, labels, norm, settings, epoch, device
) -> tuple[float, float]:
    """One epoch of SGD with crop/flip augmentation; returns (mean loss, train accuracy).

    ``images``: uint8 N×H×W×3, a tensor or an HDF5 dataset; ``labels``: int64 tensor N.
    """
    model.train()
    gen = epoch_generator(settings["seed"], epoch)
    n = len(labels)
    shape = tuple(images.shape)
    per_image = int(np.prod(shape[1:]))
    buffer = settings.get("shuffle_buffer_mb", 256) * 2**20
    window = max(settings["batch_size"], int(buffer // per_image))
    total_loss, correct = 0.0, 0
    for rows, order in epoch_windows(n, image_chunk_rows(shape), window, gen):
        pixels = _read_rows(images, rows)  # uint8 R×H×W×3, R <= window
        window_labels = labels[torch.from_numpy(rows)]
        for start in range(0, len(order), settings["batch_size"]):
            idx = order[start : start + settings["batch_size"]]
            x = preprocess(pixels[idx].to(device), norm["mean"], norm["std"])
            x = _augment(x, settings, gen)
            y = window_labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            check_finite(loss, f"pretrain_backbone epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        del pixels  # free this window before the next one is read: one window at a time
    return total_loss / n, correct / n
