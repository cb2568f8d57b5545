"""Benchmark: what each head kind costs at ResNet-56's attach points, on one CPU thread.

    python bench/head_costs.py [--samples 50000] [--batch-size 256] [--batches 4]

For every head kind and every ResNet-56 stage output (layer1 16×32×32, layer2
32×16×16, layer3 64×8×8; CIFAR-10's 10 classes) it prints the head's inference
MACs (``models.heads.head_macs``), the bytes per image of its cache form, and the
seconds (wall clock, and the process's CPU time, which a loaded machine
inflates less) of one stage-1 training epoch over ``--samples`` images (forward on the
cache form, cross-entropy, backward, Adam step on the stage-1 parameters) and of
one eval-mode forward pass over them (what stage 2 and the split outputs run),
extrapolated from ``--batches`` timed batches after one warm-up batch, with random
inputs of the real shapes. Reading the cache is not timed.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from calex_steps.models.gram import pack_gram
from calex_steps.models.heads import HEAD_KINDS, head_form, head_macs, new_head

POINTS = {"layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}
NUM_CLASSES = 10


def cache_batch(head, fmap: torch.Tensor) -> torch.Tensor:
    """The cache form of a batch of maps (the prototype heads read the packed Gram)."""
    if head_form(head.config["kind"]) == "proto":
        return pack_gram(fmap)
    return head.cache_input(fmap)


def time_head(kind: str, shape: tuple[int, int, int], args) -> dict:
    """MACs, cache bytes per image, and extrapolated epoch seconds of one head."""
    d, h, w = shape
    torch.manual_seed(0)
    head = new_head(kind, d=d, h=h, w=w, num_classes=NUM_CLASSES)
    fmap = torch.rand(args.batch_size, d, h, w)
    x = cache_batch(head, fmap)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,))
    opt = torch.optim.Adam(head.classification_parameters(), lr=1e-3)

    def train_step() -> None:
        loss = F.cross_entropy(head(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def eval_step() -> None:
        with torch.no_grad():
            head(x)

    times = {}
    for name, step, mode in (("train", train_step, True), ("eval", eval_step, False)):
        head.train(mode)
        step()  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            step()
        scale = args.samples / (args.batches * args.batch_size)
        times[name] = (time.perf_counter() - start) * scale
        times[name + "_cpu"] = (time.process_time() - cpu) * scale
    return {
        "macs": head_macs(head, d, h, w),
        "cache_bytes": 4 * x[0].numel(),
        **{f"{k}_s": v for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", default=list(HEAD_KINDS), choices=HEAD_KINDS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.samples} samples, batch {args.batch_size}, 1 thread")
    print(f"{'kind':<14} {'point':<7} {'MACs':>10} {'cache B/img':>11} {'train epoch s':>13} "
          f"{'(CPU s)':>8} {'eval pass s':>11} {'(CPU s)':>8}")  # fmt: skip
    for kind in args.kinds:
        for point, shape in POINTS.items():
            r = time_head(kind, shape, args)
            print(f"{kind:<14} {point:<7} {r['macs']:>10,} {r['cache_bytes']:>11,} "
                  f"{r['train_s']:>13.1f} {r['train_cpu_s']:>8.1f} {r['eval_s']:>11.1f} "
                  f"{r['eval_cpu_s']:>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
