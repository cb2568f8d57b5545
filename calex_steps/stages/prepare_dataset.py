"""Stage `prepare_dataset`: convert one configured source into ``prepared.h5``.

    python -m calex_steps.stages.prepare_dataset --dataset KEY --settings JSON \
        --out results/KEY/prepared.h5
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.prepared import SPLITS, write_prepared
from calex_steps.data.sources import prepare

log = logging.getLogger("calex")


def describe_split(name: str, split: dict[str, np.ndarray], num_classes: int) -> str:
    """One log line: sample count and the smallest and largest class counts."""
    counts = np.bincount(split["labels"], minlength=num_classes)
    return (
        f"{name}: {len(split['labels'])} samples, {num_classes} classes, "
        f"per class min {counts.min()} max {counts.max()}"
    )


def run_prepare_dataset(dataset: str, settings: dict, out: str | Path, workers: int = 0) -> dict:
    """Prepare ``dataset`` from ``settings`` and write ``out``; returns the root attributes.

    A missing source raises ``CalexError`` before anything is written, and an
    existing ``out`` is only replaced once the new file is complete. ``workers``
    DataLoader processes decode the images of an image folder (0 = this process).
    """
    splits, attrs = prepare(settings, workers)
    attrs = {"dataset": dataset, **attrs}
    for name in SPLITS:
        log.info(describe_split(name, splits[name], attrs["num_classes"]))
    log.info("validation split taken from: %s", attrs["val_source"])
    shape = tuple(splits["test"]["images"].shape[1:])
    log.info("images stored as uint8 %s (H×W×RGB)", "×".join(str(v) for v in shape))
    write_prepared(out, splits, attrs)
    log.info("wrote %s", out)
    return attrs


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("prepare_dataset", __doc__)
    p.add_argument("--dataset", required=True, help="dataset key (the datasets.<key> entry)")
    p.add_argument("--settings", required=True, help="JSON of the datasets.<key> subtree")
    p.add_argument("--out", required=True, help="output file, results/<key>/prepared.h5")
    p.add_argument(
        "--workers", type=int, default=0, help="image decoding processes (image folders)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema="datasets.*")
        run_prepare_dataset(a.dataset, settings, a.out, a.workers)

    return stage_main(build_parser, run, argv, hdf5_outputs=lambda a: [a.out])


if __name__ == "__main__":
    raise SystemExit(main())
