"""Stage `measure_segments`: time each backbone segment and each head kind on the device.

    python -m calex_steps.stages.measure_segments --prepared results/D/prepared.h5 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --features results/D/B/features.h5 \
        --settings '{"batch_sizes": [1, 32, 256], "warmup": 50, "timed": 500,
                     "prototypes": 64}' \
        --device cpu --threads 2 --out results/D/B/latency/segments.json

The backbone is cut at the feature cache's attach points as the deployable cascade
cuts it (``cascade.module.split_backbone``). At every batch size the first segment
(preprocessing of uint8 images included), each later one, the tail (remaining blocks,
pool, classifier), the plain backbone and a head of every kind the study uses at every
attach point (``settings["heads"]``, e.g. ``augmented``, ``sdn``, ``basic+cascade``;
untrained weights, timing does not depend on them) run on consecutive test images,
scripted as the exported cascade runs them; each part is timed in interleaved rounds and
the median kept (``cascade.latency.segment_costs``). ``segments.json`` (docs/formats.md) is what the
sweeps predict their latency reduction from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from calex_steps.cascade.artifact import script_cascade
from calex_steps.cascade.exit_heads import inference_head
from calex_steps.cascade.latency import segment_costs, timed_image_count
from calex_steps.cascade.module import CascadeModel, split_backbone
from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.feature_cache import HEAD_FORMS, features_meta, use_gram
from calex_steps.data.files import save_text
from calex_steps.errors import CalexError
from calex_steps.models.checkpoints import load_classifier, load_frozen_backbone
from calex_steps.models.heads import build_head, head_config
from calex_steps.models.inference import load_split

log = logging.getLogger("calex")
# timed apart, the segments should add up to the whole backbone; further off, say so
SUM_TOLERANCE = 0.10
HEAD_KINDS = ("augmented", "basic", "basic+cascade")  # timed when settings name no heads
SETTINGS_KEYS = ("batch_sizes", "warmup", "timed", "prototypes")


def check_settings(settings: dict) -> None:
    """One clear error for missing or impossible settings."""
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    if missing:
        raise CalexError(f"--settings lacks {missing}; pass latency.batch_sizes, warmup, "
                         "timed and training.prototypes")  # fmt: skip
    sizes = settings["batch_sizes"]
    if not sizes or min(sizes) < 1 or settings["warmup"] < 0 or settings["timed"] < 1:
        raise CalexError(
            f"latency needs batch sizes >= 1, warmup >= 0 and timed >= 1, got {sizes}, "
            f"{settings['warmup']} and {settings['timed']}; fix the latency block"
        )


def stored_kind(kind: str, d: int, h: int, w: int) -> str:
    """How the cache stores a head kind's input at a d×h×w point (as the sweep read it)."""
    form = HEAD_FORMS[kind]
    if form == "proto":
        return "gram" if use_gram(d, h, w) else "map"
    return form


def exit_heads(names: list[str], shapes: list[torch.Size], num_classes: int,
               prototypes: int, device: torch.device) -> dict[str, list]:  # fmt: skip
    """Untrained inference heads of every named kind (``kind`` or ``kind+cascade``) at every
    attach point (seeded)."""
    torch.manual_seed(0)
    heads = {}
    for name in names:
        kind, _, cascade = name.partition("+")
        heads[name] = []
        for b, shape in enumerate(shapes):
            d, h, w = (int(v) for v in shape[1:])
            prev = num_classes if cascade and b > 0 else 0
            head = build_head(head_config(kind, d, h, w, num_classes, prototypes, prev))
            exit_head = inference_head(head.eval().requires_grad_(False),
                                       stored_kind(kind, d, h, w), True)  # fmt: skip
            heads[name].append(exit_head.to(device))
    return heads


def run_measure_segments(prepared, backbone, probe, features, settings: dict, device: str,
                         out) -> dict:  # fmt: skip
    """Measure every part at every batch size; write ``segments.json``; return it."""
    check_settings(settings)
    dev = resolve_device(device)
    meta = features_meta(features)
    attach = list(meta["attach_points"])
    model, bb = load_frozen_backbone(backbone, "cpu")
    classifier = load_classifier(model, probe, "cpu")
    segments, tail = split_backbone(model, classifier, attach)
    norm = bb["normalization"]
    count = timed_image_count(settings["batch_sizes"], settings["warmup"], settings["timed"])
    images = load_split(prepared, "test", "labels", rows=count)[0].to(dev)
    with torch.inference_mode():
        shapes, x = [], images[:1].cpu().permute(0, 3, 1, 2).float()
        for segment in segments:
            x = segment(x)
            shapes.append(x.shape)
    kinds = list(settings.get("heads") or HEAD_KINDS)
    heads = exit_heads(kinds, shapes, classifier.out_features, int(settings["prototypes"]), dev)
    # The parts run as the exported cascade runs them: scripted (TorchScript).
    thresholds = torch.ones(len(attach), classifier.out_features)
    names = [str(c) for c in range(classifier.out_features)]
    cascade = CascadeModel(segments, heads[kinds[0]], tail, thresholds, norm["mean"],
                           norm["std"], names).eval().to(dev)  # fmt: skip
    scripted = script_cascade(cascade).to(dev)
    heads = {kind: [script_cascade(h) for h in hs] for kind, hs in heads.items()}
    per_batch = {}
    for batch in sorted(settings["batch_sizes"]):
        entry = segment_costs(scripted.prepare, list(scripted.segments), scripted.tail, heads,
                              scripted.backbone_logits, images, batch, settings["warmup"],
                              settings["timed"])  # fmt: skip
        per_batch[str(batch)] = entry
        parts = sum(entry["segments_ms"]) + entry["tail_ms"]
        if abs(parts / entry["backbone_ms"] - 1.0) > SUM_TOLERANCE:
            log.warning(
                "batch %d: the segments and tail sum to %.4f ms per sample but the whole "
                "backbone takes %.4f ms: the predicted latency reduction is off by about %.2f",
                batch, parts, entry["backbone_ms"], 1.0 - parts / entry["backbone_ms"],
            )  # fmt: skip
        log.info("batch %d: segments %s ms, tail %.4f ms, backbone %.4f ms per sample", batch,
                 [round(t, 4) for t in entry["segments_ms"]], entry["tail_ms"],
                 entry["backbone_ms"])  # fmt: skip
    result = {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "attach_points": attach, "arch": bb["arch"], "width": bb["width"],
              "prototypes": int(settings["prototypes"]), "per_batch": per_batch}  # fmt: skip
    save_text(out, json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("measure_segments", __doc__)
    p.add_argument("--prepared", type=Path, required=True, help="prepared.h5 (test images)")
    p.add_argument("--backbone", type=Path, required=True, help="backbone.pt")
    p.add_argument("--probe", type=Path, help="probe.pt (hierarchical datasets)")
    p.add_argument("--features", type=Path, required=True, help="features.h5 (attach points)")
    p.add_argument("--settings", required=True, help="JSON: batch_sizes, warmup, timed, prototypes")
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, help="segments.json to write")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema=("latency", "training", "$defs.stage_inputs"))
        run_measure_segments(a.prepared, a.backbone, a.probe, a.features, settings, a.device,
                             a.out)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
