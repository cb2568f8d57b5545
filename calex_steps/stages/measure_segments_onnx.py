"""Stage `measure_segments_onnx`: time each backbone segment and each head kind in ONNX Runtime.

    python -m calex_steps.stages.measure_segments_onnx --prepared results/D/prepared.h5 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --features results/D/B/features.h5 \
        --settings '{"batch_sizes": [1, 32, 256], "warmup": 50, "timed": 500,
                     "prototypes": 64}' \
        --threads 2 --out results/D/B/latency/segments_onnx.json

The ONNX Runtime sibling of ``measure_segments``: the same parts (the backbone cut at
the feature cache's attach points, an untrained head of every kind the study uses at
every attach point, ``settings["heads"]``: ``cascade.latency.untrained_cascade``),
exported to ONNX as the ONNX cascade exports them (``deploy.onnx_export``) and timed
in ONNX Runtime on the CPU in interleaved rounds (``deploy.timing.onnx_segment_costs``).
The file has the format of ``segments.json`` (docs/formats.md) plus ``runtime`` and
``onnxruntime``; with ``latency.lr_runtime: onnx`` the sweeps predict their latency
reduction from it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import onnxruntime

from calex_steps.cascade.latency import (
    check_segment_settings,
    timed_image_count,
    untrained_cascade,
)
from calex_steps.cascade.module import CascadeModel
from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.feature_cache import features_meta
from calex_steps.data.files import save_text
from calex_steps.data.prepared import read_arrays
from calex_steps.deploy.onnx_export import cut_parts, cut_segments_and_heads, export_parts
from calex_steps.deploy.timing import onnx_segment_costs, ort_session

log = logging.getLogger("calex")
SCHEMA = ("latency", "training", "$defs.stage_inputs")  # what --settings may hold


def onnx_timing_parts(backbone, probe, features, prototypes: int, threads: int,
                      kinds: list[str] | None = None) -> dict:  # fmt: skip
    """Sessions of every segment, the tail, the backbone and the heads of each kind in
    ``kinds`` (default ``cascade.latency.HEAD_KINDS``)."""
    cascade, heads, bb = untrained_cascade(backbone, probe, features, prototypes, kinds)
    count = len(cascade.heads)
    size = int(bb.get("input_size", 32))
    sessions = {"heads": {}, "reads_prev": {}}
    for kind, kind_heads in heads.items():
        model = CascadeModel(list(cascade.segments), kind_heads, cascade.tail,
                             cascade.thresholds.float(), cascade.mean.flatten().tolist(),
                             cascade.std.flatten().tolist(), cascade.class_names,
                             meta={"input_size": size}).eval()  # fmt: skip
        full = export_parts(model, size)
        segments, kind_heads, reads_prev = cut_segments_and_heads(full, count)
        sessions["heads"][kind] = [ort_session(h, threads) for h in kind_heads]
        sessions["reads_prev"][kind] = reads_prev
        if "segments" not in sessions:
            parts = cut_parts(full, count)
            sessions["segments"] = [ort_session(s, threads) for s in segments]
            sessions["tail"] = ort_session(parts.tail, threads)
            sessions["backbone"] = ort_session(parts.backbone, threads)
            sessions["info"] = bb
    return sessions


def run_measure_segments_onnx(prepared, backbone, probe, features, settings: dict, out,
                              threads: int = 0) -> dict:  # fmt: skip
    """Measure every part at every batch size in ONNX Runtime; write the JSON; return it."""
    check_segment_settings(settings)
    attach = list(features_meta(features)["attach_points"])
    parts = onnx_timing_parts(backbone, probe, features, int(settings["prototypes"]), threads,
                              settings.get("heads"))  # fmt: skip
    count = timed_image_count(settings["batch_sizes"], settings["warmup"], settings["timed"])
    images = read_arrays(prepared, "test", ("images",), count)[0]
    per_batch = {}
    for batch in sorted(settings["batch_sizes"]):
        entry = onnx_segment_costs(parts["segments"], parts["tail"], parts["heads"],
                                   parts["reads_prev"], parts["backbone"], images, batch,
                                   settings["warmup"], settings["timed"])  # fmt: skip
        per_batch[str(batch)] = entry
        log.info("batch %d: segments %s ms, tail %.4f ms, backbone %.4f ms per sample", batch,
                 [round(t, 4) for t in entry["segments_ms"]], entry["tail_ms"],
                 entry["backbone_ms"])  # fmt: skip
    bb = parts["info"]
    result = {"device": "cpu", "runtime": "onnxruntime", "threads": threads,
              "onnxruntime": onnxruntime.__version__, "attach_points": attach,
              "arch": bb["arch"], "width": bb["width"], "prototypes": int(settings["prototypes"]),
              "per_batch": per_batch}  # fmt: skip
    save_text(out, json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("measure_segments_onnx", __doc__)
    p.add_argument("--prepared", type=Path, required=True, help="prepared.h5 (test images)")
    p.add_argument("--backbone", type=Path, required=True, help="backbone.pt")
    p.add_argument("--probe", type=Path, help="probe.pt (hierarchical datasets)")
    p.add_argument("--features", type=Path, required=True, help="features.h5 (attach points)")
    p.add_argument("--settings", required=True, help="JSON: batch_sizes, warmup, timed, prototypes")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--out", type=Path, required=True, help="segments_onnx.json to write")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_measure_segments_onnx(a.prepared, a.backbone, a.probe, a.features,
                                  parse_json_arg(a.settings, schema=SCHEMA), a.out,
                                  a.threads)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
