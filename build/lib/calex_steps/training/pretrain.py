"""One epoch of backbone pretraining: SGD with crop/flip augmentation (SPEC section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calex_steps.models.inference import preprocess
from calex_steps.training.augment import random_crop_flip
from calex_steps.training.loops import check_finite, epoch_generator


def train_epoch(
    model, optimizer, images, labels, norm, settings, epoch, device
) -> tuple[float, float]:
    """One epoch of SGD with crop/flip augmentation; returns (mean loss, train accuracy)."""
    model.train()
    gen = epoch_generator(settings["seed"], epoch)
    order = torch.randperm(len(images), generator=gen)
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), settings["batch_size"]):
        idx = order[start : start + settings["batch_size"]]
        x = preprocess(images[idx].to(device), norm["mean"], norm["std"])
        x = random_crop_flip(x, settings["crop_padding"], settings["hflip"], gen)
        y = labels[idx].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        check_finite(loss, f"pretrain_backbone epoch {epoch + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(order), correct / len(order)
