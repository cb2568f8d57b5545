"""Stage `import_backbone`: bring your own trained backbone instead of pretraining.

    python -m calex_steps.stages.import_backbone --data results/D/prepared.h5 \
        --backbone JSON --checkpoint weights.th --device auto --out results/D/B/backbone.pt

The user's state dict is loaded strictly into the configured architecture
(one line names the first key that does not fit), then the backbone's own
accuracy is measured on the prepared validation and test splits, and written
into a calex ``backbone.pt`` like the one pretraining writes. When the
validation samples were carved from the official test split, the accuracy on
the whole official test split (validation + test) is reported too. A checkpoint
with other classes than the dataset (ImageNet weights on a user's folder) keeps
its own head here when ``new_head`` is set; the ``probe_coarse`` rule then fits
the dataset's linear classifier on its frozen penultimate features. A checkpoint
that scores near chance on the validation split (at most twice chance) stops the
run with the likely causes, unless ``accept_near_chance`` is set (docs/bad-input.md).
"""

from __future__ import annotations

import logging

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.files import sha256_file
from calex_steps.data.prepared import read_prepared_attrs
from calex_steps.errors import CalexError
from calex_steps.models.backbones import build_backbone
from calex_steps.models.checkpoints import checkpoint_classes, load_weights, save_checkpoint
from calex_steps.models.inference import evaluate, image_size, open_split, refuse_near_chance

log = logging.getLogger("calex")


def run_import_backbone(data, backbone: dict, checkpoint, device: str, out) -> dict:
    """Load, check and evaluate a user checkpoint; write it as ``backbone.pt``."""
    dev = resolve_device(device)
    attrs = read_prepared_attrs(data)
    num_classes = int(attrs["num_fine_classes"])
    own_classes = _head_classes(backbone, checkpoint, num_classes)
    model = build_backbone(backbone["arch"], backbone.get("width", 1.0), own_classes)
    load_weights(model, checkpoint)
    model.eval().requires_grad_(False).to(dev)
    norm = backbone["normalization"]
    fields = {
        "arch": backbone["arch"],
        "width": backbone.get("width", 1.0),
        "num_classes": own_classes,
        "normalization": norm,
        "input_size": image_size(data),
        "source_checkpoint": str(checkpoint),
        "source_sha256": sha256_file(checkpoint),
        "accept_near_chance": bool(backbone.get("accept_near_chance", False)),
    }
    if own_classes != num_classes:
        log.info(
            "the checkpoint's head has %d classes, the dataset %d: probe_coarse fits a new "
            "linear head on the frozen features; its accuracy is the backbone's",
            own_classes,
            num_classes,
        )
        fields.update(val_acc=float("nan"), test_acc=float("nan"), new_head=True)
        return save_checkpoint(out, model, **fields)
    counts, accs = {}, {}
    for split in ("val", "test"):
        with open_split(data, split, "fine_labels") as (images, labels):
            accs[split] = evaluate(model, images, labels, norm, dev)
        counts[split] = len(labels)
        log.info("backbone accuracy on %s: %.4f (%d images)", split, accs[split], counts[split])
    if not backbone.get("accept_near_chance", False):
        refuse_near_chance(accs["val"], num_classes, f"the checkpoint {checkpoint}",
                           fields["input_size"], norm)  # fmt: skip
    fields.update(val_acc=accs["val"], test_acc=accs["test"])
    if attrs.get("val_source") == "test":
        whole = (accs["val"] * counts["val"] + accs["test"] * counts["test"]) / sum(counts.values())
        fields["official_test_acc"] = whole
        log.info(
            "backbone accuracy on the whole official test split: %.4f (%d images)",
            whole,
            sum(counts.values()),
        )
    ckpt = save_checkpoint(out, model, **fields)
    return ckpt


def _head_classes(backbone: dict, checkpoint, num_classes: int) -> int:
    """Outputs of the checkpoint's own classifier; they must be the dataset's classes
    unless ``new_head`` asks for a new linear head fitted on the frozen features."""
    own = checkpoint_classes(checkpoint)
    if own is None or own == num_classes:
        return num_classes
    if not backbone.get("new_head", False):
        raise CalexError(
            f"{checkpoint} classifies {own} classes but the dataset has {num_classes}; set "
            "new_head: true in its backbones.<key> entry to fit a new linear head on the "
            "frozen features (probe settings)"
        )
    return own


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("import_backbone", __doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="JSON: the config's backbones.<key> entry")
    p.add_argument("--checkpoint", required=True, help="the user's trained weights (a state dict)")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        backbone = parse_json_arg(a.backbone, "--backbone", "backbones.*")
        run_import_backbone(a.data, backbone, a.checkpoint, a.device, a.out)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
