"""Stage `train_joint`: train all branches of a joint recipe (PTEEnet, BoostNet) at once.

    python -m calex_steps.stages.train_joint --features results/D/B/features.h5 \
        --recipe pteenet --settings JSON --seed 0 --device auto --threads 1 \
        --out-heads .../branch1.pt .../branch2.pt .../branch3.pt \
        --out-outputs .../branch1.npz .../branch2.npz .../branch3.npz

The objectives and the training are ``calex_steps.training.joint``; the
outputs are exactly those of sequential recipes, one head and one output file
per branch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.branch_files import branch_files_bytes, branch_meta, write_branch_outputs
from calex_steps.data.feature_cache import SPLITS, cache_id, features_meta
from calex_steps.errors import CalexError
from calex_steps.io import require_space
from calex_steps.models.checkpoints import save_head
from calex_steps.models.heads import head_macs
from calex_steps.training.joint import (
    DEFAULT_MEMORY_MB,
    build_joint,
    exit_cost_fractions,
    fit_joint,
    joint_outputs,
    open_joint_splits,
    parse_joint_settings,
)
from calex_steps.training.joint_search import apply_search
from calex_steps.training.scratch import drop_scratch


def run_train_joint(
    features_path: str | os.PathLike,
    settings: dict,
    seed: int,
    device: str | torch.device,
    out_heads: list[str | os.PathLike],
    out_outputs: list[str | os.PathLike],
    log: logging.Logger | None = None,
    *,
    recipe: str,
    search: dict | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    exits: list[str] | None = None,
) -> dict:
    """Train every branch of joint ``recipe`` and write ``branch{l}.pt``/``.npz`` for each.

    The cache is read in batches (see ``training.joint.open_joint_splits`` for ``memory_mb``).

    ``out_heads``/``out_outputs`` hold one path per exit, in order; ``exits`` are the
    recipe's attach points (default every point of the cache). Returns ``agreement``
    (split -> per-branch fraction of predictions equal to y*), ``head_macs`` (per branch),
    ``loss_weights`` (BoostNet's g_l, else None) and ``features_id``. A recipe with
    ``search`` lists trains the values its ``search`` record (search.json of
    ``search_baseline``) chose.
    """
    log = log or logging.getLogger("calex")
    settings = apply_search(settings, search)
    cfg = parse_joint_settings(settings)
    device = resolve_device(device)
    features_id = cache_id(features_path)
    meta = features_meta(features_path)
    exits = list(exits or meta.get("attach_points", []))
    num_points = len(exit_cost_fractions(meta, features_path, exits))
    if not len(out_heads) == len(out_outputs) == num_points:
        raise CalexError(
            f"the recipe has {num_points} exits {exits} but got {len(out_heads)} head "
            f"and {len(out_outputs)} output paths; pass one of each per branch"
        )
    with contextlib.ExitStack() as stack:
        data, infos = open_joint_splits(features_path, exits, stack, memory_mb, SPLITS, cfg.head)
        num_classes = int(data["train"]["teacher"].shape[1])
        model, costs, configs, _ = build_joint(infos, num_classes, cfg, seed, meta, features_path,
                                               exits)  # fmt: skip
        run = dict(recipe=recipe, seed=seed, features_id=features_id, settings=settings,
                   exits=exits)  # fmt: skip
        return _train_and_write(data, infos, model, cfg, costs, configs, device, out_heads,
                                out_outputs, run, search, log)  # fmt: skip


def _train_and_write(data, infos, model, cfg, costs, configs, device, out_heads, out_outputs,
                     run, search, log) -> dict:  # fmt: skip
    """Train the joint heads on the open cache and write every branch's files."""
    recipe, seed, features_id, settings = (run[k] for k in ("recipe", "seed", "features_id",
                                                             "settings"))  # fmt: skip
    fingerprint = {
        "recipe": recipe,
        "seed": seed,
        "features_id": features_id,
        "settings": dataclasses.asdict(cfg),
        "head_configs": configs,
        "costs": dataclasses.asdict(costs),
    }
    samples, num_classes = (
        sum(len(data[sp]["y"]) for sp in SPLITS),
        data["train"]["teacher"].shape[1],
    )
    needed = sum(branch_files_bytes(samples, num_classes, sum(p.numel() for p in head.parameters()))
                 for head in model.heads)  # fmt: skip
    require_space(out_outputs[0], needed, "the branch files")
    model = model.to(device)
    if cfg.target == "pteenet":
        log.info("pteenet: exit costs %s, end %.4f (heads counted)", costs.exits, costs.final)
    fit_joint(model, data["train"], cfg, costs, seed, fingerprint, out_heads[0], log)

    r = cfg.boost_r if cfg.target == "boostnet" else None
    outputs = {sp: joint_outputs(model, data[sp], r, cfg.batch_size) for sp in SPLITS}
    weights = model.loss_weights()
    macs = []
    for b, (head, info) in enumerate(zip(model.heads, infos, strict=True), start=1):
        macs.append(head_macs(head, info["d"], info["h"], info["w"]))
        meta = branch_meta(recipe, seed, b, features_id, macs[-1], settings, run["exits"][b - 1])
        if weights is not None:
            meta["loss_weights"] = weights
        if search is not None:
            meta["search_chosen"] = search["chosen"]
        save_head(out_heads[b - 1], head, meta)
        write_branch_outputs(out_outputs[b - 1], {sp: outputs[sp][b - 1] for sp in SPLITS}, meta)
    drop_scratch(out_heads[0])
    agreement = {
        sp: [float(np.mean(o["pred"] == data[sp]["y"].numpy())) for o in outputs[sp]]
        for sp in SPLITS
    }
    log.info("%s done: agreement with the backbone %s, head MACs %s", recipe, agreement, macs)
    if weights is not None:
        log.info("final loss weights g_l %s", weights)
    return {
        "agreement": agreement,
        "head_macs": macs,
        "loss_weights": weights,
        "features_id": features_id,
    }


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("train_joint", __doc__)
    p.add_argument("--features", required=True, help="features.h5 of the dataset and backbone")
    p.add_argument("--recipe", required=True, help="recipe name (recorded in the outputs)")
    p.add_argument("--settings", required=True, help="JSON of the resolved recipe settings")
    p.add_argument("--seed", type=int, required=True)
    add_runtime_args(p)
    p.add_argument("--search", nargs="*", default=[], help="search.json (recipes with search)")
    p.add_argument("--exits", help="JSON list of the recipe's attach points (default: the cache's)")
    p.add_argument("--out-heads", nargs="+", required=True, help="branch{l}.pt, in order")
    p.add_argument("--out-outputs", nargs="+", required=True, help="branch{l}.npz, in order")
    p.add_argument(
        "--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
        help="hold the train splits' features in RAM up to this float32 size; else read rows",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        search = json.loads(Path(a.search[0]).read_text()) if a.search else None
        settings = parse_json_arg(a.settings, schema="recipes.*")
        run_train_joint(a.features, settings, a.seed, a.device, a.out_heads, a.out_outputs,
                        recipe=a.recipe, search=search, memory_mb=a.memory_mb,
                        exits=json.loads(a.exits) if a.exits else None)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
