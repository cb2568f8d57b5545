"""Stage `search_baseline`: choose a joint baseline's frontier-deciding settings on the
calibration split (docs/baselines.md, search).

    python -m calex_steps.stages.search_baseline --features results/D/B/features.h5 \
        --recipe pteenet --settings JSON --seed 0 --device auto --threads 1 \
        --out results/D/B/pteenet/search.json

The recipe's ``search`` lists span a grid; every grid point trains in full, is
scored on the calibration split only (``calex_steps.cascade.selection``), and the
best one is written to ``search.json``, which ``train_joint`` of every seed reads.
The test split of the cache is never opened.
"""

from __future__ import annotations

import json
import logging
import os

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.io import atomic_path
from calex_steps.training.joint_search import run_search
from calex_steps.training.scratch import drop_scratch


def run_search_baseline(
    features_path: str | os.PathLike,
    settings: dict,
    seed: int,
    device: str,
    out: str | os.PathLike,
    log: logging.Logger | None = None,
    *,
    recipe: str,
    exits: list[str] | None = None,
) -> dict:
    """Run the search of ``recipe`` and write its record to ``out`` (JSON); return it.
    ``exits``: the recipe's attach points (default every point of the cache)."""
    log = log or logging.getLogger("calex")
    record = run_search(features_path, settings, seed, resolve_device(device), out, log,
                        exits=exits)  # fmt: skip
    record = {"recipe": recipe, **record}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    drop_scratch(out)
    return record


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("search_baseline", __doc__)
    p.add_argument("--features", required=True, help="features.h5 of the dataset and backbone")
    p.add_argument("--recipe", required=True, help="recipe name (recorded in the output)")
    p.add_argument("--settings", required=True, help="JSON of the resolved recipe settings")
    p.add_argument("--seed", type=int, required=True, help="the seed every grid point trains")
    add_runtime_args(p)
    p.add_argument("--exits", help="JSON list of the recipe's attach points (default: the cache's)")
    p.add_argument("--out", required=True, help="search.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema="recipes.*")
        exits = json.loads(a.exits) if a.exits else None
        run_search_baseline(a.features, settings, a.seed, a.device, a.out, recipe=a.recipe,
                            exits=exits)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
