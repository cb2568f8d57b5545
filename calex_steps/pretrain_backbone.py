"""Stage `pretrain_backbone`: train the CIFAR backbone on the prepared data (SPEC section 3).

    python -m calex_steps.pretrain_backbone --data results/D/prepared.h5 \
        --backbone JSON --settings JSON --device auto --threads 2 --out results/D/B/backbone.pt

Every hyper-parameter comes from ``--settings`` (the config's ``pretrain``
block). One log line per epoch. A scratch checkpoint beside the output is
written after every epoch; a rerun resumes from it and ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import h5py
import torch
import torch.nn.functional as F

from calex_steps import __version__
from calex_steps.backbones import build_backbone, preprocess
from calex_steps.io import (
    CalexError,
    add_runtime_args,
    atomic_path,
    parse_json_arg,
    resolve_device,
    run_main,
    set_threads,
    setup_logging,
)
from calex_steps.training_utils import (
    check_finite,
    cosine_lr,
    drop_scratch,
    epoch_generator,
    load_scratch,
    random_crop_flip,
    save_scratch,
    set_lr,
)

log = setup_logging()


def load_split(path, split: str, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 N×H×W×3) and labels of one split of a prepared file."""
    with h5py.File(path, "r") as f:
        if split not in f:
            raise CalexError(f"{path} has no '{split}' split; rerun prepare_dataset")
        return torch.from_numpy(f[split]["images"][()]), torch.from_numpy(f[split][label_key][()])


@torch.no_grad()
def evaluate(model, images, labels, norm, device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8 images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size].to(device), norm["mean"], norm["std"])
        correct += (model(x).argmax(1).cpu() == labels[start : start + batch_size]).sum().item()
    return correct / max(len(images), 1)


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


def run_pretrain_backbone(
    data,
    backbone: dict,
    settings: dict,
    device: str,
    out,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict:
    """Pretrain, evaluate on val and test, and write the checkpoint with its metadata.

    ``on_epoch_end(epoch)`` runs after each epoch's scratch checkpoint is saved
    (tests use it to interrupt a run at a known epoch).
    """
    torch.manual_seed(settings["seed"])
    dev = resolve_device(device)
    with h5py.File(data, "r") as f:
        num_classes = int(f.attrs["num_fine_classes"])
    train_x, train_y = load_split(data, "train", "fine_labels")
    model = build_backbone(backbone["arch"], backbone["width"], num_classes).to(dev)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings["lr"],
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
        nesterov=False,
    )
    norm = backbone["normalization"]
    fingerprint = {"backbone": backbone, "settings": settings, "classes": num_classes}
    start_epoch = 0
    state = load_scratch(out, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        log.info("resuming from the scratch checkpoint after epoch %d", start_epoch)
    log.info(
        "training %s width %s on %d images, %d classes, device %s",
        backbone["arch"],
        backbone["width"],
        len(train_x),
        num_classes,
        dev,
    )
    for epoch in range(start_epoch, settings["epochs"]):
        tic = time.perf_counter()
        lr = cosine_lr(settings["lr"], epoch, settings["epochs"])
        set_lr(optimizer, lr)
        loss, acc = train_epoch(model, optimizer, train_x, train_y, norm, settings, epoch, dev)
        log.info(
            "epoch %d/%d loss %.4f train_acc %.4f lr %.5f time %.1fs",
            epoch + 1,
            settings["epochs"],
            loss,
            acc,
            lr,
            time.perf_counter() - tic,
        )
        save_scratch(
            out,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "fingerprint": fingerprint,
            },
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    accs = {
        split: evaluate(model, *load_split(data, split, "fine_labels"), norm, dev)
        for split in ("val", "test")
    }
    log.info("val_acc %.4f test_acc %.4f", accs["val"], accs["test"])
    ckpt = {
        "arch": backbone["arch"],
        "width": backbone["width"],
        "num_classes": num_classes,
        "normalization": norm,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "val_acc": accs["val"],
        "test_acc": accs["test"],
        "settings": settings,
        "seed": settings["seed"],
        "epochs": settings["epochs"],
        "calex_version": __version__,
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    drop_scratch(out)
    return ckpt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calex_steps.pretrain_backbone", description=__doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="JSON: the config's backbones.<key> entry")
    p.add_argument("--settings", required=True, help="JSON: the config's pretrain block")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    settings = parse_json_arg(args.settings)
    backbone = parse_json_arg(args.backbone)
    log.info("settings %s", json.dumps(settings, sort_keys=True))
    run_pretrain_backbone(args.data, backbone, settings, args.device, args.out)


def main(argv=None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
