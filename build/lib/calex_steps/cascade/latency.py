"""Timing a model on its device: batches, warm-up, synchronisation, GPU energy (SPEC section 11).

At batch size B every timed call runs B consecutive test images (the test set
cycles), uint8 in, preprocessing included, under ``torch.inference_mode``.
A point takes ``max(1, ceil(warmup / B))`` warm-up calls and
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

NOT_MEASURED = "not measured"


MIN_CALLS = 3


POWER_PERIOD_S = 0.005


def call_counts(batch_size: int, warmup: int, timed: int) -> tuple[int, int]:
    """(warm-up calls, timed calls) of one measurement at ``batch_size`` (module docstring)."""
    return max(1, math.ceil(warmup / batch_size)), max(MIN_CALLS, math.ceil(timed / batch_size))


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
