"""Stage `pretrain_backbone`: train the backbone on the prepared data (docs/method.md#backbone).

    python -m calex_steps.stages.pretrain_backbone --data results/D/prepared.h5 \
        --backbone JSON --settings JSON --device auto --threads 2 --out results/D/B/backbone.pt

Every hyper-parameter comes from ``--settings`` (the config's ``pretrain``
block). One log line per epoch. A scratch checkpoint beside the output is
written after every epoch; a rerun resumes from it and ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.prepared import read_prepared_attrs
from calex_steps.models.backbones import build_backbone
from calex_steps.models.checkpoints import save_checkpoint
from calex_steps.models.inference import evaluate, image_size, open_split
from calex_steps.training.loops import cosine_lr, set_lr
from calex_steps.training.pretrain import train_epoch
from calex_steps.training.scratch import drop_scratch, load_scratch, save_scratch

log = logging.getLogger("calex")


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
    num_classes = int(read_prepared_attrs(data)["num_fine_classes"])
    with open_split(data, "train", "fine_labels") as (train_x, train_y):
        model = _train(backbone, num_classes, train_x, train_y, settings, dev, out, on_epoch_end)
    norm = backbone["normalization"]
    accs = {}
    for split in ("val", "test"):
        with open_split(data, split, "fine_labels") as (images, labels):
            accs[split] = evaluate(model, images, labels, norm, dev)
    log.info("val_acc %.4f test_acc %.4f", accs["val"], accs["test"])
    fields = {
        "arch": backbone["arch"],
        "width": backbone["width"],
        "num_classes": num_classes,
        "normalization": norm,
        "input_size": image_size(data),
        "val_acc": accs["val"],
        "test_acc": accs["test"],
        "settings": settings,
        "seed": settings["seed"],
        "epochs": settings["epochs"],
    }
    ckpt = save_checkpoint(out, model, **fields)
    drop_scratch(out)
    return ckpt


def _train(backbone, num_classes, train_x, train_y, settings, dev, out, on_epoch_end):
    """The epochs of pretraining, resumed from the scratch checkpoint when there is one."""
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
    return model


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("pretrain_backbone", __doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="JSON: the config's backbones.<key> entry")
    p.add_argument("--settings", required=True, help="JSON: the config's pretrain block")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        backbone = parse_json_arg(a.backbone, "--backbone", "backbones.*")
        settings = parse_json_arg(a.settings, schema="pretrain")
        run_pretrain_backbone(a.data, backbone, settings, a.device, a.out)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
