"""One recipe's operating point in ONNX Runtime, float and INT8 (stage measure_latency_onnx).

``onnx_point`` builds the recipe's cascade at the margin of its frontier nearest the
wanted FR, exports it (float), quantizes and recalibrates it (INT8), and evaluates both
early-exit graphs and both plain backbones on the whole test split. ``time_point``
times the four graphs on the same batches in alternating rounds. Rows of the two
tables (docs/deploy.md) come from ``latency_row`` and ``int8_row``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.latency import call_counts
from calex_steps.cascade.simulate import segment_times
from calex_steps.data.feature_cache import features_meta
from calex_steps.deploy.build import exit_spec, input_size, int8_cascade, onnx_meta
from calex_steps.deploy.decisions import exit_fractions
from calex_steps.deploy.onnx_export import cut_parts, export_parts
from calex_steps.deploy.onnx_graph import compose
from calex_steps.deploy.timing import image_batches, ort_session, runner, time_sessions
from calex_steps.reporting.latency import operating_point

GRAPHS = ("cascade", "backbone", "int8_cascade", "int8_backbone")
ROUNDS = 5  # alternating rounds, the median counts (as measure_latency)


@dataclass
class Point:
    """A recipe's operating point: its four graphs and what they do on the test split."""

    recipe: str
    seed: int
    margin: float
    fr: float
    lr: float
    attach: list[str]
    graphs: dict[str, onnx.ModelProto]
    scores: dict[str, dict]  # graph -> accuracy, exit fractions, FR


def run_all(session, images: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Every output of ``session`` on ``images``, ``batch`` at a time, concatenated."""
    fn = runner(session)
    chunks = [fn(images[s : s + batch]) for s in range(0, len(images), batch)]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def score(session, images, labels, costs, total_macs: float, cascade: bool) -> dict:
    """Accuracy, exit fractions and FR of a cascade (or accuracy of a backbone)."""
    out = run_all(session, images)
    if not cascade:
        return {"accuracy": float(np.mean(out[0].argmax(axis=1) == labels))}
    fracs = exit_fractions(out[1], len(costs) - 1)
    return {"accuracy": float(np.mean(out[0] == labels)), "exit_fractions": fracs,
            "fr": 1.0 - float(np.dot(fracs, costs)) / total_macs}  # fmt: skip


def onnx_point(entry: dict, fr: float, test: tuple, calibration: tuple,
               threads: int) -> Point:  # fmt: skip
    """Build, export, quantize and score one plan entry (``measure_latency``'s plan: its
    ``exits`` count, default every attach point of the cache; with ``settings``: the
    recipe's exit rule and calibration_images)."""
    run, branch_run = Path(entry["run"]), Path(entry["branch_run"])
    point = operating_point(run / "split0" / "frontier.csv", fr)
    count = entry.get("exits") or len(features_meta(run_paths(run)["features"])["attach_points"])
    model = build_cascade(
        run, float(point["margin"]), exit_signal=entry["exit_signal"],
        branches=[branch_run / f"branch{b}.pt" for b in range(1, count + 1)],
        ensembles=[branch_run / f"ztw_ensemble{b}.npz" for b in range(1, count + 1)],
    )  # fmt: skip
    full = export_parts(model, input_size(model))
    parts = cut_parts(full, count)
    spec = exit_spec(model)
    int8, int8_parts = int8_cascade(model, full, *calibration, entry["settings"], threads)
    graphs = {"cascade": compose(parts, spec, onnx_meta(model, spec)),
              "backbone": parts.backbone, "int8_cascade": int8,
              "int8_backbone": int8_parts.backbone}  # fmt: skip
    with np.load(run / "split0" / "exits.npz") as z:
        costs, total = np.asarray(z["costs"], np.float64), float(z["total_macs"])
    images, labels = test
    scores = {name: score(ort_session(g, threads), images, labels, costs, total,
                          name.endswith("cascade"))
              for name, g in graphs.items()}  # fmt: skip
    info = json.loads(model.meta_json)
    return Point(entry["recipe"], int(info["seed"]), float(point["margin"]), float(point["fr"]),
                 float(point.get("lr", float("nan"))), list(info["attach_points"]), graphs,
                 scores)  # fmt: skip


def time_point(point: Point, images: np.ndarray, batch: int, warmup: int, timed: int,
               threads: int) -> tuple[dict[str, float], np.ndarray]:  # fmt: skip
    """Median ms per sample of the four graphs at ``batch`` (alternating rounds, after a
    warm-up that passes every timed batch), and the float cascade's exit fractions on
    the timed images."""
    warm_calls, timed_calls = call_counts(batch, warmup, timed)
    batches = image_batches(images, batch, timed_calls)
    sessions = {name: ort_session(point.graphs[name], threads) for name in GRAPHS}
    ms = time_sessions(sessions, batches, batch, max(warm_calls, timed_calls), ROUNDS)
    exits = np.concatenate([sessions["cascade"].run(None, {"images": x})[1] for x in batches])
    return ms, np.asarray(exit_fractions(exits, len(point.attach)))


def predicted_speedup(segments: dict | None, fracs: np.ndarray, attach: list[str], batch: int,
                      head: str) -> float:  # fmt: skip
    """backbone time / cascade time predicted from ONNX Runtime segment times and the
    exits the timed images take (as ``measure_latency`` predicts from PyTorch's)."""
    if segments is None or str(batch) not in segments.get("per_batch", {}):
        return float("nan")
    times, backbone = segment_times(segments, attach, batch, head)
    return backbone / float(np.dot(fracs, times))


def latency_row(point: Point, batch: int, ms: dict, predicted: float) -> dict:
    """A row of ``latency_onnx.csv`` (the columns of ``latency.csv``)."""
    cascade = point.scores["cascade"]
    return {"recipe": point.recipe, "seed": point.seed, "margin": point.margin,
            "fr": point.fr, "lr": point.lr, "accuracy": cascade["accuracy"],
            "batch_size": batch, "latency_ms_per_sample": ms["cascade"],
            "backbone_latency_ms_per_sample": ms["backbone"],
            "measured_speedup": ms["backbone"] / ms["cascade"],
            "predicted_speedup": predicted, "flops_speedup": 1.0 / (1.0 - point.fr),
            "energy_mj_per_sample": "not measured",
            "backbone_energy_mj_per_sample": "not measured"}  # fmt: skip


def int8_row(point: Point, batch: int, ms: dict) -> dict:
    """A row of ``int8.csv``: float and INT8 side by side, speed-ups against the float
    backbone, and whether the early exit's and INT8's speed-ups multiply."""
    s = point.scores
    row = {"recipe": point.recipe, "seed": point.seed, "margin": point.margin,
           "batch_size": batch, "accuracy": s["cascade"]["accuracy"],
           "int8_accuracy": s["int8_cascade"]["accuracy"],
           "backbone_accuracy": s["backbone"]["accuracy"],
           "int8_backbone_accuracy": s["int8_backbone"]["accuracy"],
           "fr": s["cascade"]["fr"], "int8_fr": s["int8_cascade"]["fr"]}  # fmt: skip
    for prefix, name in (("", "cascade"), ("int8_", "int8_cascade")):
        fracs = s[name]["exit_fractions"]
        for b, frac in enumerate(fracs):
            key = "backbone" if b == len(fracs) - 1 else str(b + 1)
            row[f"{prefix}exit_frac_{key}"] = frac
    base = ms["backbone"]
    row |= {f"{name}_ms_per_sample": ms[name] for name in GRAPHS}
    row |= {f"{name}_speedup": base / ms[name]
            for name in ("cascade", "int8_backbone", "int8_cascade")}  # fmt: skip
    row["product_speedup"] = row["cascade_speedup"] * row["int8_backbone_speedup"]
    row["multiplies"] = row["int8_cascade_speedup"] / row["product_speedup"]
    return row
