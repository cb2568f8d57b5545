"""Stage ``prepare_dataset``: convert one configured source into ``prepared.h5``.

    python -m calex_steps.prepare_dataset --dataset KEY --settings JSON \\
        --out results/KEY/prepared.h5
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from calex_steps import datasets
from calex_steps.io import parse_json_arg, run_main, setup_logging

log = logging.getLogger("calex")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the stage."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="dataset key (the datasets.<key> entry)")
    p.add_argument("--settings", required=True, help="JSON of the datasets.<key> subtree")
    p.add_argument("--out", required=True, help="output file, results/<key>/prepared.h5")
    return p


def describe_split(name: str, split: dict[str, np.ndarray], num_classes: int) -> str:
    """One log line: sample count and the smallest and largest class counts."""
    counts = np.bincount(split["labels"], minlength=num_classes)
    return (
        f"{name}: {len(split['labels'])} samples, {num_classes} classes, "
        f"per class min {counts.min()} max {counts.max()}"
    )


def run_prepare_dataset(dataset: str, settings: dict, out: str | Path) -> dict:
    """Prepare ``dataset`` from ``settings`` and write ``out``; returns the root attributes.

    A missing source raises ``CalexError`` before anything is written, and an
    existing ``out`` is only replaced once the new file is complete.
    """
    splits, attrs = datasets.prepare(settings)
    attrs = {"dataset": dataset, **attrs}
    for name in datasets.SPLITS:
        log.info(describe_split(name, splits[name], attrs["num_classes"]))
    log.info("validation split taken from: %s", attrs["val_source"])
    datasets.write_prepared(out, splits, attrs)
    log.info("wrote %s", out)
    return attrs


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run the stage, turn CalexError into exit code 1."""

    def body(args_list: list[str] | None) -> None:
        setup_logging()
        args = build_parser().parse_args(args_list)
        run_prepare_dataset(args.dataset, parse_json_arg(args.settings), args.out)

    return run_main(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
