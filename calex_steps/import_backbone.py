"""Stage `import_backbone`: bring your own trained backbone instead of pretraining.

    python -m calex_steps.import_backbone --data results/D/prepared.h5 \
        --backbone JSON --checkpoint weights.th --device auto --out results/D/B/backbone.pt

The user's state dict is loaded strictly into the configured architecture
(one line names the first key that does not fit), then the backbone's own
accuracy is measured on the prepared validation and test splits, and written
into a calex ``backbone.pt`` like the one pretraining writes. When the
validation samples were carved from the official test split, the accuracy on
the whole official test split (validation + test) is reported too.
"""

from __future__ import annotations

import argparse

import torch

from calex_steps import __version__
from calex_steps.backbones import build_backbone, load_weights
from calex_steps.datasets import read_prepared_attrs
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
from calex_steps.pretrain_backbone import evaluate, load_split

log = setup_logging()


def run_import_backbone(data, backbone: dict, checkpoint, device: str, out) -> dict:
    """Load, check and evaluate a user checkpoint; write it as ``backbone.pt``."""
    dev = resolve_device(device)
    attrs = read_prepared_attrs(data)
    num_classes = int(attrs["num_fine_classes"])
    model = build_backbone(backbone["arch"], backbone.get("width", 1.0), num_classes)
    load_weights(model, checkpoint)
    model.eval().requires_grad_(False).to(dev)
    norm = backbone["normalization"]
    counts, accs = {}, {}
    for split in ("val", "test"):
        images, labels = load_split(data, split, "fine_labels")
        accs[split] = evaluate(model, images, labels, norm, dev)
        counts[split] = len(labels)
        log.info("backbone accuracy on %s: %.4f (%d images)", split, accs[split], counts[split])
    ckpt = {
        "arch": backbone["arch"],
        "width": backbone.get("width", 1.0),
        "num_classes": num_classes,
        "normalization": norm,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "val_acc": accs["val"],
        "test_acc": accs["test"],
        "source_checkpoint": str(checkpoint),
        "source_sha256": sha256_file(checkpoint),
        "calex_version": __version__,
    }
    if attrs.get("val_source") == "test":
        whole = (accs["val"] * counts["val"] + accs["test"] * counts["test"]) / sum(counts.values())
        ckpt["official_test_acc"] = whole
        log.info(
            "backbone accuracy on the whole official test split: %.4f (%d images)",
            whole,
            sum(counts.values()),
        )
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return ckpt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calex_steps.import_backbone", description=__doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="JSON: the config's backbones.<key> entry")
    p.add_argument("--checkpoint", required=True, help="the user's trained weights (a state dict)")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    backbone = parse_json_arg(args.backbone)
    run_import_backbone(args.data, backbone, args.checkpoint, args.device, args.out)


def main(argv=None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
