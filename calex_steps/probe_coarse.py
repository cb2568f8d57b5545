"""Stage `probe_coarse`: a linear classifier of the task (coarse) labels on frozen features.

    python -m calex_steps.probe_coarse --data results/D/prepared.h5 \
        --backbone results/D/B/backbone.pt --settings JSON --device auto --out results/D/B/probe.pt

The backbone pretrained on fine labels; the probe (SPEC section 3) is the
classifier every later stage uses. Penultimate features are computed once.
"""

from __future__ import annotations

import argparse
import time

import h5py
import torch
import torch.nn.functional as F
from torch import nn

from calex_steps import __version__
from calex_steps.backbones import preprocess, run_with_taps
from calex_steps.frozen import load_frozen_backbone
from calex_steps.io import (
    add_runtime_args,
    atomic_path,
    parse_json_arg,
    resolve_device,
    run_main,
    set_threads,
    setup_logging,
    sha256_file,
)
from calex_steps.training_utils import check_finite, cosine_lr, epoch_generator, set_lr

log = setup_logging()


@torch.no_grad()
def penultimate_features(model, images: torch.Tensor, norm: dict, device, batch_size: int = 512):
    """Frozen penultimate features (N×F, float32, on ``device``) of uint8 images."""
    chunks = []
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size].to(device), norm["mean"], norm["std"])
        chunks.append(run_with_taps(model, x, [])[1])
    return torch.cat(chunks)


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


def run_probe_coarse(data, backbone_path, settings: dict, device: str, out) -> dict:
    """Fit the probe on train, report val/test accuracy, write ``probe.pt``."""
    dev = resolve_device(device)
    model, bb = load_frozen_backbone(backbone_path, dev)
    feats, labels = {}, {}
    with h5py.File(data, "r") as f:
        num_classes = int(f.attrs["num_classes"])
        for split in ("train", "val", "test"):
            images = torch.from_numpy(f[split]["images"][()])
            feats[split] = penultimate_features(model, images, bb["normalization"], dev)
            labels[split] = torch.from_numpy(f[split]["labels"][()]).to(dev)
    layer = fit_linear(feats["train"], labels["train"], num_classes, settings)
    with torch.no_grad():
        acc = {
            s: (layer(feats[s]).argmax(1) == labels[s]).float().mean().item()
            for s in ("val", "test")
        }
    log.info("probe val_acc %.4f test_acc %.4f", acc["val"], acc["test"])
    ckpt = {
        "in_features": feats["train"].shape[1],
        "num_classes": num_classes,
        "state_dict": {k: v.cpu() for k, v in layer.state_dict().items()},
        "val_acc": acc["val"],
        "test_acc": acc["test"],
        "backbone_sha256": sha256_file(backbone_path),
        "settings": settings,
        "calex_version": __version__,
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return ckpt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calex_steps.probe_coarse", description=__doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="backbone.pt")
    p.add_argument("--settings", required=True, help="JSON: the config's probe block")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    run_probe_coarse(args.data, args.backbone, parse_json_arg(args.settings), args.device, args.out)


def main(argv=None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
