"""Timing a model on its device: batches, warm-up, sync, GPU energy (docs/method.md#latency).

At batch size B every timed call runs B consecutive test images (the test set
cycles), uint8 in, preprocessing included, under ``torch.inference_mode``.
A point takes ``max(2, ceil(warmup / B))`` warm-up calls and
``max(MIN_CALLS, ceil(timed / B))`` timed calls: batch 1 gets exactly
``warmup`` + ``timed`` inferences, larger batches at least ``timed`` samples.
On a GPU the clock reads after ``torch.cuda.synchronize`` and NVML gives the
energy (total-energy counter, else integrated power samples); on the CPU the
energy is "not measured".
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from calex_steps.cascade.exit_heads import inference_head
from calex_steps.cascade.module import CascadeModel, split_backbone
from calex_steps.data.feature_cache import HEAD_FORMS, features_meta, use_gram
from calex_steps.errors import CalexError
from calex_steps.models.checkpoints import load_classifier, load_frozen_backbone
from calex_steps.models.heads import build_head, head_config

NOT_MEASURED = "not measured"


# The head kinds measure_segments times at every attach point when its settings name none
# (``settings["heads"]``: the study's kinds, a recipe's `latency_head`).
HEAD_KINDS = ("augmented", "basic", "basic+cascade")
SEGMENT_SETTINGS = ("batch_sizes", "warmup", "timed", "prototypes")


MIN_CALLS = 3


POWER_PERIOD_S = 0.005


MIN_WARM_CALLS = 2  # TorchScript's profiling executor optimises a graph on its second call


def call_counts(batch_size: int, warmup: int, timed: int) -> tuple[int, int]:
    """(warm-up calls, timed calls) of one measurement at ``batch_size`` (module docstring)."""
    warm = max(MIN_WARM_CALLS, math.ceil(warmup / batch_size))
    return warm, max(MIN_CALLS, math.ceil(timed / batch_size))


def timed_image_count(batch_sizes: list[int], warmup: int, timed: int) -> int:
    """How many test images a measurement at every batch size runs through without
    cycling (warm-up and timed calls both start at the first image): the stages read
    only those from ``prepared.h5``, not the whole test split."""
    return max(b * max(call_counts(b, warmup, timed)) for b in batch_sizes)


def batch_views(images: torch.Tensor, batch_size: int, calls: int) -> list[torch.Tensor]:
    """``calls`` batches of consecutive images, cycling through ``images`` (N×H×W×3)."""
    n = images.shape[0]
    starts = [(i * batch_size) % n for i in range(calls)]
    idx = [torch.arange(s, s + batch_size, device=images.device) % n for s in starts]
    return [images.index_select(0, i).contiguous() for i in idx]


class EnergyMeter:
    """GPU energy in mJ over a ``with`` block, from NVML; ``None`` when not measurable."""

    def __init__(self, device: torch.device) -> None:
        self.handle, self.nvml, self.mj = None, None, None
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.handle, self.nvml = pynvml.nvmlDeviceGetHandleByIndex(index), pynvml
        except Exception:  # no NVML library or driver: energy stays "not measured"
            self.handle = None

    def _counter(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))  # mJ
        except Exception:
            return None

    def _sample_power(self) -> None:
        while not self._stop.is_set():
            watts = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # mW -> W
            self._samples.append((time.perf_counter(), watts))
            time.sleep(POWER_PERIOD_S)

    def __enter__(self) -> EnergyMeter:
        if self.handle is None:
            return self
        self._start = self._counter()
        if self._start is None:
            self._thread = threading.Thread(target=self._sample_power, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is None:
            return
        if self._start is not None:
            self.mj = self._counter() - self._start
            return
        self._stop.set()
        self._thread.join()
        if len(self._samples) >= 2:
            t, w = np.array(self._samples).T
            self.mj = float(np.trapezoid(w, t) * 1000.0)  # W·s -> mJ


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_point(fn: Callable[[torch.Tensor], object], images: torch.Tensor, batch_size: int,
               warmup: int, timed: int) -> tuple[float, float | str]:  # fmt: skip
    """(ms per sample, mJ per sample or "not measured") of ``fn`` at ``batch_size``."""
    device = images.device
    warm_calls, timed_calls = call_counts(batch_size, warmup, timed)
    warm = batch_views(images, batch_size, warm_calls)
    batches = batch_views(images, batch_size, timed_calls)
    with torch.inference_mode():
        for batch in warm:
            fn(batch)
        _sync(device)
        with EnergyMeter(device) as meter:
            began = time.perf_counter()
            for batch in batches:
                fn(batch)
            _sync(device)
            elapsed = time.perf_counter() - began
    samples = batch_size * timed_calls
    energy = NOT_MEASURED if meter.mj is None else meter.mj / samples
    return 1000.0 * elapsed / samples, energy


def _elapsed(fn: Callable[[torch.Tensor], object], batches: list, device: torch.device) -> float:
    """Seconds for one pass of ``fn`` over ``batches`` (synchronised on a GPU)."""
    _sync(device)
    began = time.perf_counter()
    for batch in batches:
        fn(batch)
    _sync(device)
    return time.perf_counter() - began


def time_parts(parts: dict[str, tuple[Callable, list]], batch_size: int, warm_calls: int,
               rounds: int, device: torch.device) -> dict[str, float]:  # fmt: skip
    """Median per-sample milliseconds of each named (fn, batches) part.

    Every part is warmed up on its first ``warm_calls`` batches, then the parts are
    timed in turn, ``rounds`` times, so that a change of load on a shared machine hits
    them alike; the median round counts.
    """
    seconds: dict[str, list[float]] = {name: [] for name in parts}
    with torch.inference_mode():
        for fn, batches in parts.values():
            for i in range(warm_calls):
                fn(batches[i % len(batches)])
        for _ in range(rounds):
            for name, (fn, batches) in parts.items():
                seconds[name].append(_elapsed(fn, batches, device))
    return {name: 1000.0 * float(np.median(s)) / (batch_size * len(parts[name][1]))
            for name, s in seconds.items()}  # fmt: skip


def segment_costs(prepare: Callable, segments: list, tail: Callable, heads: dict[str, list],
                  backbone: Callable, images: torch.Tensor, batch_size: int, warmup: int,
                  timed: int, rounds: int = 3) -> dict:  # fmt: skip
    """One batch size's entry of ``segments.json`` (``cascade.simulate.segment_times``).

    Args:
        prepare: uint8 N×H×W×3 -> normalised float input (timed as part of segment 1).
        segments: the L backbone segments ending at the attach points.
        tail: the rest of the backbone, pool and classifier.
        heads: head kind -> L exit heads (``ExitHead``; ``+cascade`` kinds take the
            previous logits).
        backbone: the plain backbone, uint8 images -> logits.
        images: uint8 test images N×H×W×3 on the device.

    Returns:
        ``segments_ms`` (L), ``tail_ms``, ``backbone_ms`` and ``heads_ms`` {kind: (L)},
        milliseconds per sample at ``batch_size``.
    """
    warm_calls, timed_calls = call_counts(batch_size, warmup, timed)
    raw = batch_views(images, batch_size, timed_calls)
    inputs, parts = [raw], {}
    with torch.inference_mode():
        for b, segment in enumerate(segments):
            fn = (lambda u, s=segment: s(prepare(u))) if b == 0 else segment
            parts[f"segment{b}"] = (fn, inputs[-1])
            inputs.append([fn(x) for x in inputs[-1]])
        parts["tail"] = (tail, inputs[-1])
        logits = [tail(x) for x in inputs[-1]]
    parts["backbone"] = (backbone, raw)
    for kind, kind_heads in heads.items():
        for b, head in enumerate(kind_heads):
            args = [(x, z) for x, z in zip(inputs[b + 1], logits, strict=True)]
            parts[f"{kind}/{b}"] = ((lambda a, h=head: h(a[0], a[1])), args)
    for name, (fn, batches) in parts.items():
        parts[name] = (fn, batches[:timed_calls])
    ms = time_parts(parts, batch_size, warm_calls, rounds, images.device)
    return {
        "segments_ms": [ms[f"segment{b}"] for b in range(len(segments))],
        "tail_ms": ms["tail"],
        "backbone_ms": ms["backbone"],
        "heads_ms": {k: [ms[f"{k}/{b}"] for b in range(len(h))] for k, h in heads.items()},
    }


def stored_kind(kind: str, d: int, h: int, w: int) -> str:
    """How the feature cache stores a head kind's input at a d×h×w point (``HEAD_FORMS``;
    a prototype head reads the packed Gram when it is smaller than the map)."""
    form = HEAD_FORMS[kind]
    if form == "proto":
        return "gram" if use_gram(d, h, w) else "map"
    return form


def exit_heads(names: list[str], shapes: list[torch.Size], num_classes: int,
               prototypes: int, device: torch.device) -> dict[str, list[nn.Module]]:  # fmt: skip
    """Untrained inference heads (``cascade.exit_heads.inference_head``) of every named kind
    (``kind`` or ``kind+cascade``, ``models.heads.HEAD_KINDS``) at every attach point of
    shape ``shapes[b]`` (N×d×H×W), seeded."""
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
                                       stored_kind(kind, d, h, w))  # fmt: skip
            heads[name].append(exit_head.to(device))
    return heads


def check_segment_settings(settings: dict) -> None:
    """One clear error for missing or impossible settings of measure_segments."""
    missing = [k for k in SEGMENT_SETTINGS if k not in settings]
    if missing:
        raise CalexError(f"--settings lacks {missing}; pass latency.batch_sizes, warmup, "
                         "timed and training.prototypes")  # fmt: skip
    sizes = settings["batch_sizes"]
    if not sizes or min(sizes) < 1 or settings["warmup"] < 0 or settings["timed"] < 1:
        raise CalexError(
            f"latency needs batch sizes >= 1, warmup >= 0 and timed >= 1, got {sizes}, "
            f"{settings['warmup']} and {settings['timed']}; fix the latency block"
        )


def untrained_cascade(
    backbone, probe, features, prototypes: int, kinds: list[str] | None = None
) -> tuple[CascadeModel, dict[str, list[nn.Module]], dict]:
    """What measure_segments times, on the CPU: the backbone cut at the feature cache's
    attach points into a cascade of untrained heads of the first kind (thresholds 1:
    nothing exits), the heads of every kind in ``kinds`` (default ``HEAD_KINDS``;
    ``exit_heads``), and the backbone's checkpoint info."""
    attach = list(features_meta(features)["attach_points"])
    model, bb = load_frozen_backbone(backbone, "cpu")
    classifier = load_classifier(model, probe, "cpu")
    segments, tail = split_backbone(model, classifier, attach)
    size = int(bb.get("input_size", 32))
    with torch.inference_mode():
        shapes, x = [], torch.zeros(1, 3, size, size)
        for segment in segments:
            x = segment(x)
            shapes.append(x.shape)
    names = list(kinds or HEAD_KINDS)
    heads = exit_heads(names, shapes, classifier.out_features, prototypes, torch.device("cpu"))
    norm, num_classes = bb["normalization"], classifier.out_features
    cascade = CascadeModel(segments, heads[names[0]], tail, torch.ones(len(attach), num_classes),
                           norm["mean"], norm["std"], [str(c) for c in range(num_classes)],
                           meta={"input_size": size})  # fmt: skip
    return cascade.eval(), heads, bb
