"""Stage `probe_coarse`: a linear classifier of the task (coarse) labels on frozen features.

    python -m calex_steps.stages.probe_coarse --data results/D/prepared.h5 \
        --backbone results/D/B/backbone.pt --settings JSON --device auto --out results/D/B/probe.pt

The backbone pretrained on fine labels, or an imported checkpoint's head has
other classes than the dataset (``new_head``); the probe (docs/method.md#backbone) is
the classifier every later stage uses. Penultimate features are computed once,
streaming the images batch by batch. The probe of an imported checkpoint that
scores near chance on the validation split stops the run, as import_backbone does.
"""

from __future__ import annotations

import logging

import torch

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.files import sha256_file
from calex_steps.data.prepared import read_prepared_attrs
from calex_steps.models.checkpoints import load_frozen_backbone, save_checkpoint
from calex_steps.models.inference import (
    image_size,
    open_split,
    penultimate_features,
    refuse_near_chance,
)
from calex_steps.training.probe import fit_linear

log = logging.getLogger("calex")


def run_probe_coarse(data, backbone_path, settings: dict, device: str, out) -> dict:
    """Fit the probe on train, report val/test accuracy, write ``probe.pt``."""
    dev = resolve_device(device)
    model, bb = load_frozen_backbone(backbone_path, dev)
    feats, labels = {}, {}
    num_classes = int(read_prepared_attrs(data)["num_classes"])
    for split in ("train", "val", "test"):
        with open_split(data, split, "labels") as (images, task_labels):
            feats[split] = penultimate_features(model, images, bb["normalization"], dev)
        labels[split] = task_labels.to(dev)
    layer = fit_linear(feats["train"], labels["train"], num_classes, settings)
    with torch.no_grad():
        acc = {
            s: (layer(feats[s]).argmax(1) == labels[s]).float().mean().item()
            for s in ("val", "test")
        }
    log.info("probe val_acc %.4f test_acc %.4f", acc["val"], acc["test"])
    if "source_checkpoint" in bb and not bb.get("accept_near_chance", False):
        what = f"the linear probe on the checkpoint {bb['source_checkpoint']}"
        refuse_near_chance(acc["val"], num_classes, what, image_size(data), bb["normalization"])
    fields = {
        "in_features": feats["train"].shape[1],
        "num_classes": num_classes,
        "val_acc": acc["val"],
        "test_acc": acc["test"],
        "backbone_sha256": sha256_file(backbone_path),
        "settings": settings,
    }
    ckpt = save_checkpoint(out, layer, **fields)
    return ckpt


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("probe_coarse", __doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="backbone.pt")
    p.add_argument("--settings", required=True, help="JSON: the config's probe block")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema="probe")
        run_probe_coarse(a.data, a.backbone, settings, a.device, a.out)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
