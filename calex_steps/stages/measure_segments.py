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
from calex_steps.cascade.latency import (
    check_segment_settings,
    segment_costs,
    timed_image_count,
    untrained_cascade,
)
from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.feature_cache import features_meta
from calex_steps.data.files import save_text
from calex_steps.models.inference import load_split

log = logging.getLogger("calex")
# timed apart, the segments should add up to the whole backbone; further off, say so
SUM_TOLERANCE = 0.10


def run_measure_segments(prepared, backbone, probe, features, settings: dict, device: str,
                         out) -> dict:  # fmt: skip
    """Measure every part at every batch size; write ``segments.json``; return it."""
    check_segment_settings(settings)
    dev = resolve_device(device)
    count = timed_image_count(settings["batch_sizes"], settings["warmup"], settings["timed"])
    images = load_split(prepared, "test", "labels", rows=count)[0].to(dev)
    cascade, heads, bb = untrained_cascade(backbone, probe, features, int(settings["prototypes"]),
                                           settings.get("heads"))  # fmt: skip
    attach = list(features_meta(features)["attach_points"])
    cascade, heads = cascade.to(dev), {k: [h.to(dev) for h in hs] for k, hs in heads.items()}
    # The parts run as the exported cascade runs them: scripted (TorchScript).
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
