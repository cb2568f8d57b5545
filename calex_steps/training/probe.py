"""A linear classifier fitted on frozen features: the coarse probe (docs/method.md#backbone)."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.training.loops import check_finite, cosine_lr, epoch_generator, set_lr

log = logging.getLogger("calex")


def fit_linear(feats, labels, num_classes: int, settings: dict) -> nn.Linear:
    """SGD with cosine schedule on fixed features; one log line per epoch."""
    torch.manual_seed(settings["seed"])
    layer = nn.Linear(feats.shape[1], num_classes).to(feats.device)
    opt = torch.optim.SGD(
        layer.parameters(),
        lr=settings["lr"],
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
    )
    for epoch in range(settings["epochs"]):
        tic = time.perf_counter()
        set_lr(opt, cosine_lr(settings["lr"], epoch, settings["epochs"]))
        order = torch.randperm(len(feats), generator=epoch_generator(settings["seed"], epoch))
        total, correct = 0.0, 0
        for start in range(0, len(order), settings["batch_size"]):
            idx = order[start : start + settings["batch_size"]].to(feats.device)
            logits = layer(feats[idx])
            loss = F.cross_entropy(logits, labels[idx])
            check_finite(loss, f"probe_coarse epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        log.info(
            "epoch %d/%d loss %.4f train_acc %.4f time %.2fs",
            epoch + 1,
            settings["epochs"],
            total / len(order),
            correct / len(order),
            time.perf_counter() - tic,
        )
    return layer.eval()
