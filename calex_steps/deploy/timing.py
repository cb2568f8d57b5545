"""Timing ONNX graphs in ONNX Runtime as ``cascade.latency`` times TorchScript ones.

Every timed call runs a batch of consecutive uint8 test images (preprocessing
included) through an ``InferenceSession`` on the CPU; parts are timed in alternating
rounds and the median round counts (``cascade.latency.time_parts``), after a warm-up.
``onnx_segment_costs`` is the ONNX Runtime sibling of ``cascade.latency.segment_costs``:
one batch size's entry of ``segments.json``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from calex_steps.cascade.latency import batch_views, call_counts, time_parts

CPU = torch.device("cpu")


def ort_session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A CPU session of ``model`` for timing, ``threads`` intra-op threads (0 = ONNX
    Runtime's default), its worker threads not spinning.

    The timings alternate many sessions in one process (every segment and head, or
    cascade and backbone, float and INT8), each with its own thread pool. With ONNX
    Runtime's default, idle workers spin waiting for work and take the cores from the
    session that runs: on ResNet-56 cut into 14 segments the segments timed apart
    summed to 1.6x (batch 256) to 5x (batch 1) the whole backbone, and to the
    backbone's time within 17% once spinning was off (docs/deploy.md). A deployed
    cascade is one session, so the runner keeps the default.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def runner(session: ort.InferenceSession) -> Callable:
    """``fn(inputs)`` running ``session``: ``inputs`` is one array or a tuple, in the
    order of the graph's inputs; returns the list of outputs."""
    names = [i.name for i in session.get_inputs()]

    def run(inputs):
        arrays = inputs if isinstance(inputs, tuple) else (inputs,)
        return session.run(None, dict(zip(names, arrays, strict=True)))

    return run


def image_batches(images: np.ndarray, batch_size: int, calls: int) -> list[np.ndarray]:
    """``calls`` batches of consecutive images, cycling (``cascade.latency.batch_views``)."""
    views = batch_views(torch.from_numpy(images), batch_size, calls)
    return [v.numpy() for v in views]


def time_sessions(sessions: dict[str, ort.InferenceSession], batches: list[np.ndarray],
                  batch_size: int, warm_calls: int, rounds: int) -> dict[str, float]:  # fmt: skip
    """Median ms per sample of each session on the same ``batches``, alternating rounds."""
    parts = {name: (runner(s), batches) for name, s in sessions.items()}
    return time_parts(parts, batch_size, warm_calls, rounds, CPU)


def onnx_segment_costs(segments: list, tail, heads: dict[str, list], reads_prev: dict,
                       backbone, images: np.ndarray, batch_size: int, warmup: int,
                       timed: int, rounds: int = 3) -> dict:  # fmt: skip
    """One batch size's entry of ``segments.json``, timed in ONNX Runtime.

    Args:
        segments: L sessions, ``images`` (uint8) or map b-1 -> map b.
        tail: session, the last map -> logits.
        heads: head kind -> L sessions, map b [, previous logits] -> outputs.
        reads_prev: head kind -> L flags, whether head b reads the previous logits.
        backbone: session, uint8 images -> logits.
        images: uint8 test images N×H×W×3.

    Returns:
        ``segments_ms`` (L), ``tail_ms``, ``backbone_ms`` and ``heads_ms`` {kind: (L)},
        milliseconds per sample at ``batch_size``.
    """
    warm_calls, timed_calls = call_counts(batch_size, warmup, timed)
    raw = image_batches(images, batch_size, timed_calls)
    maps, parts = [raw], {}
    for b, segment in enumerate(segments):
        fn = runner(segment)
        parts[f"segment{b}"] = (fn, maps[-1])
        maps.append([fn(x)[0] for x in maps[-1]])
    parts["tail"] = (runner(tail), maps[-1])
    parts["backbone"] = (runner(backbone), raw)
    for kind, kind_heads in heads.items():
        logits = None
        for b, head in enumerate(kind_heads):
            fn = runner(head)
            args = [(x, z) for x, z in zip(maps[b + 1], logits, strict=True)] \
                if reads_prev[kind][b] else maps[b + 1]  # fmt: skip
            parts[f"{kind}/{b}"] = (fn, args)
            logits = [fn(a)[0] for a in args]
    ms = time_parts(parts, batch_size, warm_calls, rounds, CPU)
    return {
        "segments_ms": [ms[f"segment{b}"] for b in range(len(segments))],
        "tail_ms": ms["tail"],
        "backbone_ms": ms["backbone"],
        "heads_ms": {k: [ms[f"{k}/{b}"] for b in range(len(h))] for k, h in heads.items()},
    }
