"""Stage `train_branch`: train one early-exit branch of a sequential recipe (SPEC sections 5, 6, 8).

    python -m calex_steps.stages.train_branch --features results/D/B/features.h5 \
        --branch 2 --prev results/D/B/R/seed0/branch1.npz --backbone results/D/B/backbone.pt \
        --recipe R --settings JSON --seed 0 --device auto --threads 1 \
        --out-head results/D/B/R/seed0/branch2.pt --out-outputs results/D/B/R/seed0/branch2.npz

The training itself is ``calex_steps.training.branch``; this stage reads the
cache and the earlier branches' outputs, and writes the head and its outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.branch_files import branch_meta, load_prev_outputs, write_branch_outputs
from calex_steps.data.feature_cache import SPLITS, cache_id, check_provenance, load_branch_inputs
from calex_steps.data.files import sha256_file
from calex_steps.models.checkpoints import save_head
from calex_steps.models.heads import PrototypeHead, head_macs
from calex_steps.training.branch import (
    branch_outputs,
    epoch_plan,
    fit_branch,
    parse_settings,
    require_branches,
    split_tensors,
)
from calex_steps.training.scratch import drop_scratch


def run_train_branch(
    features_path: str | os.PathLike,
    branch: int,
    prev_outputs: list[str | os.PathLike],
    settings: dict,
    seed: int,
    device: str | torch.device,
    out_head: str | os.PathLike,
    out_outputs: str | os.PathLike,
    log: logging.Logger | None = None,
    *,
    recipe: str,
) -> dict:
    """Train branch ``branch`` (1-based) of ``recipe`` and write its head and outputs.

    Returns a summary: ``agreement`` per split (branch prediction == backbone
    prediction), ``head_macs``, ``features_id``.
    """
    log = log or logging.getLogger("calex")
    cfg = parse_settings(settings)
    device = resolve_device(device)
    features_id = cache_id(features_path)
    inputs = load_branch_inputs(features_path, branch, SPLITS)
    prev = load_prev_outputs(prev_outputs, recipe, seed, features_id, branch)
    if cfg.cascade_input and branch > 1:
        require_branches(prev, range(branch - 1, branch), "cascade input")
    data = split_tensors(inputs, prev, branch, cfg.cascade_input)
    plan = epoch_plan(cfg, prev, seed, branch, len(data["train"]["y"]))
    info = inputs["train"]
    num_classes = int(info["logits"].shape[1])
    prev_dim = 0 if data["train"]["prev"] is None else int(data["train"]["prev"].shape[1])
    head_config = {
        "d": info["d"],
        "num_classes": num_classes,
        "prototypes": cfg.prototypes,
        "kind": cfg.head,
        "cascade_input_dim": prev_dim,
    }
    fingerprint = {
        "recipe": recipe,
        "seed": seed,
        "branch": branch,
        "features_id": features_id,
        "settings": dataclasses.asdict(cfg),
        "head_config": head_config,
        "prev": sorted(sha256_file(p["path"]) for p in prev.values()),
    }
    torch.manual_seed(seed * 1000 + branch)
    head = PrototypeHead(**head_config).to(device)
    fit_branch(head, data["train"], cfg, plan, fingerprint, out_head, log)

    outputs = {sp: branch_outputs(head, data[sp], cfg.batch_size) for sp in SPLITS}
    macs = head_macs(head, info["d"], info["h"], info["w"])
    meta = branch_meta(recipe, seed, branch, features_id, macs, settings)
    save_head(out_head, head, meta)
    write_branch_outputs(out_outputs, outputs, meta)
    drop_scratch(out_head)
    agreement = {sp: float(np.mean(outputs[sp]["pred"] == data[sp]["y"].numpy())) for sp in SPLITS}
    log.info(
        "branch %d done: agreement with the backbone %s, head MACs %d", branch, agreement, macs
    )
    return {"agreement": agreement, "head_macs": macs, "features_id": features_id}


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("train_branch", __doc__)
    p.add_argument("--features", required=True, help="features.h5 of the dataset and backbone")
    p.add_argument("--branch", type=int, required=True, help="1-based attach point number")
    p.add_argument("--prev", nargs="*", default=[], help="outputs (.npz) of earlier branches")
    p.add_argument("--backbone", help="backbone.pt the cache must come from (provenance check)")
    p.add_argument("--recipe", required=True, help="recipe name (recorded and checked)")
    p.add_argument("--settings", required=True, help="JSON of the resolved recipe settings")
    p.add_argument("--seed", type=int, required=True)
    add_runtime_args(p)
    p.add_argument("--out-head", required=True, help="branch{l}.pt to write")
    p.add_argument("--out-outputs", required=True, help="branch{l}.npz to write")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        if a.backbone:
            check_provenance(a.features, a.backbone)
        run_train_branch(a.features, a.branch, a.prev, parse_json_arg(a.settings), a.seed,
                         a.device, a.out_head, a.out_outputs, recipe=a.recipe)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
