"""Measured speed-up of the exported cascade against the one predicted from measured segment
times (and, for comparison, from FLOPs).

    .venv/bin/python bench/cascade_speedup.py \
        --run-dir results/synthetic/r18tiny/calexnet/seed0 \
        --run-dir results/cifar10_jpeg/resnet56/calexnet/seed0 --batch-sizes 256 1

Per run: the margin of its frontier (split 0) whose FR is nearest ``--fr``; the cascade
is built and scripted as ``export_cascade`` writes it. Per batch size, on a seeded
random sample of the test images (``--images`` of them, whole batches):

1. the backbone's segments, tail and the run's own heads are timed alone
   (``cascade.latency.segment_costs``, interleaved rounds, median), and the speed-up
   predicted from them with the exit fractions the cascade gives on these images;
2. the scripted cascade and the scripted plain backbone (same segments) run in
   alternating rounds over the same batches; the median round counts.

Prints predicted (segments), measured, measured / predicted (target: at least 0.9), and
the FLOPs prediction 1 / (1 - FR) with its ratio. Repeat with ``--repeats`` and take the
median of the ratios on a shared machine.

``--compile`` also times ``torch.compile`` (inductor, dynamic shapes: the survivors of a
branch change the batch size) of the eager cascade and backbone against the scripted
ones and plain eager, every batch of the sample run once as warm-up, so that compilation
is not counted. The exported artifact stays TorchScript: a compiled module cannot be
saved as one file that loads without calex.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.artifact import script_cascade
from calex_steps.cascade.build import build_cascade, run_paths
from calex_steps.cascade.latency import segment_costs, time_parts
from calex_steps.cascade.simulate import segment_times
from calex_steps.cli import keep_freed_memory
from calex_steps.models.inference import load_split
from calex_steps.reporting.latency import operating_point
from calex_steps.stages.measure_latency import exit_fractions, time_against_backbone


def timed_images(prepared: Path, count: int, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Whole batches of a seeded random sample of the test images (uint8 N×H×W×3)."""
    images = load_split(prepared, "test", "labels")[0]
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
    calls = max(1, count // batch)
    picked = images.index_select(0, order[: calls * batch]).contiguous()
    return list(picked.split(batch))


def predicted(model, batches: list[torch.Tensor], batch: int, rounds: int) -> tuple[float, list]:
    """Speed-up predicted from the parts (scripted) timed alone, and the exit fractions."""
    costs = segment_costs(model.prepare, list(model.segments), model.tail,
                          {"run": list(model.heads)}, model.backbone_logits,
                          torch.cat(batches), batch, 0, batch * len(batches),
                          rounds)  # fmt: skip
    count = len(costs["segments_ms"])
    attach = [f"a{b}" for b in range(count)]
    times, backbone = segment_times({"attach_points": attach, "per_batch": {str(batch): costs}},
                                    attach, batch, "run")  # fmt: skip
    fracs = exit_fractions(model, batches, count)
    return backbone / float(fracs @ times), fracs.round(3).tolist()


def measured(scripted, batches: list[torch.Tensor], batch: int, rounds: int) -> float:
    """Plain backbone time / cascade time, both scripted, as ``measure_latency`` times them."""
    cascade_ms, backbone_ms = time_against_backbone(scripted, batches, batch, len(batches), rounds)
    return backbone_ms / cascade_ms


def compiled_vs_scripted(model, scripted, batches: list[torch.Tensor], batch: int,
                         rounds: int) -> dict[str, float]:  # fmt: skip
    """ms per sample of the cascade and the backbone: scripted, torch.compile, eager."""
    compiled = torch.compile(model, dynamic=True)
    compiled_backbone = torch.compile(model.backbone_logits, dynamic=True)
    parts = {"scripted cascade": (scripted, batches),
             "compiled cascade": (compiled, batches),
             "eager cascade": (model, batches),
             "scripted backbone": (scripted.backbone_logits, batches),
             "compiled backbone": (compiled_backbone, batches),
             "eager backbone": (model.backbone_logits, batches)}  # fmt: skip
    return time_parts(parts, batch, len(batches), rounds, batches[0].device)


def main() -> None:
    """Parse the arguments, measure, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", type=Path, action="append", required=True)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1])
    p.add_argument("--fr", type=float, default=0.5, help="operating point: FR nearest this")
    p.add_argument("--images", type=int, default=2048, help="timed images at batch > 1")
    p.add_argument("--images-one", type=int, default=300, help="timed images at batch 1")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="whole measurements; median ratio")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile against the scripted and eager modules",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default (freed blocks go back to the OS), as before",
    )
    a = p.parse_args()
    heap = False if a.default_malloc else keep_freed_memory()
    if a.threads:
        torch.set_num_threads(a.threads)
    for run in a.run_dir:
        point = operating_point(run / "split0" / "frontier.csv", a.fr)
        prepared = run_paths(run)["backbone"].parent.parent / "prepared.h5"
        model = build_cascade(run, float(point["margin"]), channels_last=a.channels_last)
        scripted = script_cascade(model)
        flops = 1.0 / (1.0 - float(point["fr"]))
        print(f"{run}: margin {point['margin']:g}, FR {point['fr']:.3f}, threads "
              f"{torch.get_num_threads()}, channels_last {a.channels_last}, "
              f"freed memory kept {heap}")  # fmt: skip
        for batch in a.batch_sizes:
            batches = timed_images(prepared, a.images if batch > 1 else a.images_one, batch)
            results = []
            for _ in range(a.repeats):
                pred, fracs = predicted(scripted, batches, batch, a.rounds)
                results.append((measured(scripted, batches, batch, a.rounds), pred))
            meas = statistics.median(m for m, _ in results)
            pred = statistics.median(p for _, p in results)
            ratio = statistics.median(m / p for m, p in results)
            print(f"  batch {batch:4d}: exits {fracs}; predicted (segments) {pred:.3f}, "
                  f"measured {meas:.3f}, ratio {ratio:.3f} (target >= 0.9); FLOPs "
                  f"{flops:.3f}, measured/FLOPs {meas / flops:.3f}", flush=True)  # fmt: skip
            if a.compile:
                ms = compiled_vs_scripted(model.eval(), scripted, batches, batch, a.rounds)
                shown = ", ".join(f"{name} {t:.4f}" for name, t in ms.items())
                print(f"  batch {batch:4d} ms per sample: {shown}; compiled / scripted: "
                      f"cascade {ms['scripted cascade'] / ms['compiled cascade']:.3f}x, "
                      f"backbone {ms['scripted backbone'] / ms['compiled backbone']:.3f}x "
                      "faster", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
