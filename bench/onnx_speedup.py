"""The ONNX cascade in ONNX Runtime: measured speed-up against the one its segment times
predict, and absolute times beside TorchScript (and torch.compile).

    .venv/bin/python bench/onnx_speedup.py \
        --run-dir results/cifar10_jpeg/resnet56/calexnet/seed0 --threads 2 --repeats 3

Per run: the margin of its frontier (split 0) whose FR is nearest ``--fr``; the cascade
is built as ``export_onnx`` builds it. Per batch size, on a seeded random sample of the
test images (whole batches):

1. the run's own segments, heads and tail, cut from the exported graph, are timed
   alone in ONNX Runtime (``deploy.timing.onnx_segment_costs``), and the speed-up is
   predicted from them with the exit fractions the ONNX cascade gives on these images;
2. the ONNX cascade and the ONNX backbone, and (for the absolute times) the scripted
   cascade and backbone, run in alternating rounds over the same batches; the median
   round counts (``cascade.latency.time_parts``); the ONNX Runtime parts and the torch
   parts are timed one group after the other (ONNX Runtime's idle threads spin for a
   while after a call and can slow torch calls timed between its calls; when both
   alternated in one round the torch times came out 1.3-3.5x those measured alone).

Prints predicted, measured, measured / predicted (target: at least 0.9), and the ms per
image of each. ``--compile`` adds ``torch.compile`` of the eager cascade and backbone
(every batch run once first, so compilation is not counted). ``--walk`` adds the design
the export did not take: one ONNX graph per stage, walked by a Python loop that decides
and gathers the survivors in numpy (branch exit signal only). ``--repeats``: whole
measurements, median.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.artifact import script_cascade
from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.latency import time_parts
from calex_steps.cascade.simulate import segment_times
from calex_steps.cli import keep_freed_memory
from calex_steps.data.prepared import read_arrays
from calex_steps.deploy.build import exit_spec, input_size, onnx_meta
from calex_steps.deploy.onnx_export import cut_parts, cut_segments_and_heads, export_parts
from calex_steps.deploy.onnx_graph import compose
from calex_steps.deploy.timing import CPU, onnx_segment_costs, ort_session, runner
from calex_steps.reporting.latency import operating_point

ONNX_PARTS = ("onnx cascade", "onnx backbone", "walked stages")


def sample(prepared: Path, count: int, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Whole batches of a seeded random sample of the test images (uint8 N×H×W×3)."""
    images = read_arrays(prepared, "test", ("images",))[0]
    order = np.random.default_rng(seed).permutation(len(images))
    calls = max(1, count // batch)
    return list(images[order[: calls * batch]].reshape(calls, batch, *images.shape[1:]))


def predicted(full, count: int, sessions: dict, batches: list, batch: int, rounds: int,
              threads: int) -> tuple[float, list]:  # fmt: skip
    """Speed-up predicted from the run's parts timed alone in ONNX Runtime, and exits."""
    segments, heads, reads_prev = cut_segments_and_heads(full, count)
    parts = cut_parts(full, count)
    costs = onnx_segment_costs([ort_session(s, threads) for s in segments],
                               ort_session(parts.tail, threads),
                               {"run": [ort_session(h, threads) for h in heads]},
                               {"run": reads_prev}, sessions["onnx backbone"],
                               np.concatenate(batches), batch, 0, batch * len(batches),
                               rounds)  # fmt: skip
    attach = [f"a{b}" for b in range(count)]
    times, backbone = segment_times({"attach_points": attach, "per_batch": {str(batch): costs}},
                                    attach, batch, "run")  # fmt: skip
    exits = np.concatenate([sessions["onnx cascade"].run(None, {"images": x})[1] for x in batches])
    fracs = np.bincount(exits, minlength=count + 1) / len(exits)
    return backbone / float(fracs @ times), fracs.round(3).tolist()


def walker(graph_parts, thresholds: np.ndarray, threads: int):
    """The cascade as per-stage sessions walked in Python (branch exit signal)."""
    stages = [ort_session(s, threads) for s in graph_parts.stages]
    tail = ort_session(graph_parts.tail, threads)
    names = [[i.name for i in s.get_inputs()] for s in stages]

    def run(images: np.ndarray):
        n, count = len(images), len(stages)
        pred, conf = np.zeros(n, np.int64), np.zeros(n, np.float32)
        exit_branch = np.full(n, count, np.int64)
        alive, x, prev = np.arange(n), images, None
        for b, session in enumerate(stages):
            feeds = dict(zip(names[b], (x, prev) if len(names[b]) == 2 else (x,), strict=True))
            fmap, cls, conf_logits = session.run(None, feeds)
            p = cls.argmax(axis=1)
            signal = 1.0 / (1.0 + np.exp(-conf_logits[np.arange(len(p)), p]))
            released = signal.astype(np.float64) > thresholds[b][p]
            out = alive[released]
            pred[out], conf[out], exit_branch[out] = p[released], signal[released], b
            alive, x, prev = alive[~released], fmap[~released], cls[~released]
            if not len(alive):
                return pred, exit_branch, conf
        logits = tail.run(None, {tail.get_inputs()[0].name: x})[0]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        pred[alive], conf[alive] = probs.argmax(axis=1), probs.max(axis=1)
        return pred, exit_branch, conf

    return run


def main() -> None:
    """Parse the arguments, measure, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", type=Path, action="append", required=True)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1])
    p.add_argument("--fr", type=float, default=0.5, help="operating point: FR nearest this")
    p.add_argument("--images", type=int, default=2048, help="timed images at batch > 1")
    p.add_argument("--images-one", type=int, default=300, help="timed images at batch 1")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="whole measurements; median")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--walk", action="store_true", help="also time stage graphs walked in Python")
    a = p.parse_args()
    keep_freed_memory()
    torch.set_num_threads(a.threads)
    for run in a.run_dir:
        point = operating_point(run / "split0" / "frontier.csv", a.fr)
        prepared = run_paths(run)["backbone"].parent.parent / "prepared.h5"
        model = build_cascade(run, float(point["margin"])).eval()
        count = len(model.heads)
        full = export_parts(model, input_size(model))
        spec = exit_spec(model)
        cut = cut_parts(full, count)
        graph = compose(cut, spec, onnx_meta(model, spec))
        sessions = {"onnx cascade": ort_session(graph, a.threads),
                    "onnx backbone": ort_session(cut.backbone, a.threads)}  # fmt: skip
        scripted = script_cascade(model)
        print(f"{run}: margin {point['margin']:g}, FR {point['fr']:.3f}, threads {a.threads}")
        for batch in a.batch_sizes:
            batches = sample(prepared, a.images if batch > 1 else a.images_one, batch)
            tensors = [torch.from_numpy(x) for x in batches]
            parts = {name: (runner(s), batches) for name, s in sessions.items()}
            parts |= {"scripted cascade": (scripted, tensors),
                      "scripted backbone": (scripted.backbone_logits, tensors)}  # fmt: skip
            if a.walk:
                parts["walked stages"] = (walker(cut, spec.thresholds, a.threads), batches)
            if a.compile:
                parts |= {"compiled cascade": (torch.compile(model, dynamic=True), tensors),
                          "compiled backbone": (torch.compile(model.backbone_logits,
                                                              dynamic=True), tensors)}  # fmt: skip
            results = []
            for _ in range(a.repeats):
                pred, fracs = predicted(full, count, sessions, batches, batch, a.rounds,
                                        a.threads)  # fmt: skip
                ms = {}
                for names in ([k for k in parts if k in ONNX_PARTS],
                              [k for k in parts if k not in ONNX_PARTS]):  # fmt: skip
                    # one runtime at a time: ONNX Runtime's idle threads spin for a while
                    # after a call and would slow torch's calls timed in between
                    group = {k: parts[k] for k in names}
                    with torch.inference_mode():
                        ms |= time_parts(group, batch, len(batches), a.rounds, CPU)
                results.append((ms["onnx backbone"] / ms["onnx cascade"], pred, ms))
            meas = statistics.median(m for m, _, _ in results)
            pred = statistics.median(p for _, p, _ in results)
            ratio = statistics.median(m / p for m, p, _ in results)
            ms = {k: statistics.median(r[2][k] for r in results) for k in parts}
            print(
                f"  batch {batch:4d}: exits {fracs}; ONNX Runtime predicted (segments) "
                f"{pred:.3f}, measured {meas:.3f}, ratio {ratio:.3f} (target >= 0.9)"
            )
            print(
                f"  batch {batch:4d} ms per image: "
                + ", ".join(f"{k} {v:.4f}" for k, v in ms.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
