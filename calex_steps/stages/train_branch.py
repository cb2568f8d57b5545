"""Stage `train_branch`: train one branch of a sequential recipe (docs/method.md#training).

    python -m calex_steps.stages.train_branch --features results/D/B/features.h5 \
        --branch 2 --exit layer2 \
        --prev results/D/B/R/seed0/branch1.npz results/D/B/R/seed1/branch1.npz \
        --backbone results/D/B/backbone.pt --recipe R --settings JSON --seed 0 1 \
        --device auto --threads 1 \
        --out-head results/D/B/R/seed0/branch2.pt results/D/B/R/seed1/branch2.pt \
        --out-outputs results/D/B/R/seed0/branch2.npz results/D/B/R/seed1/branch2.npz

Every seed given trains in one grouped computation and writes its own files,
those a job of that seed alone writes. The training itself is
``calex_steps.training.branch``; this stage reads the cache (in batches) and the
earlier branches' outputs, and writes the heads and their outputs.
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
from calex_steps.data.branch_files import (
    branch_files_bytes,
    branch_meta,
    load_prev_outputs,
    write_branch_outputs,
)
from calex_steps.data.feature_cache import (
    HEAD_FORMS,
    SPLITS,
    BranchInputs,
    attach_index,
    cache_id,
    check_provenance,
    features_meta,
)
from calex_steps.data.files import sha256_file
from calex_steps.errors import CalexError
from calex_steps.io import require_space
from calex_steps.models.checkpoints import save_head
from calex_steps.models.heads import build_head, head_config, head_macs
from calex_steps.training.branch import (
    branch_outputs,
    epoch_plan,
    fit_branches,
    parse_settings,
    require_branches,
    split_tensors,
)
from calex_steps.training.scratch import drop_scratch

DEFAULT_MEMORY_MB = 2048.0  # the train split's float32 features up to this size stay in RAM


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
    memory_mb: float = DEFAULT_MEMORY_MB,
    exit_point: str | None = None,
) -> dict:
    """Train branch ``branch`` (1-based) of ``recipe`` for one seed (a group of one)."""
    return run_train_branches(features_path, branch, [list(prev_outputs)], settings, [seed],
                              device, [out_head], [out_outputs], log, recipe=recipe,
                              memory_mb=memory_mb, exit_point=exit_point)[0]  # fmt: skip


def run_train_branches(
    features_path: str | os.PathLike,
    branch: int,
    prev_outputs: list[list[str | os.PathLike]],
    settings: dict,
    seeds: list[int],
    device: str | torch.device,
    out_heads: list[str | os.PathLike],
    out_outputs: list[str | os.PathLike],
    log: logging.Logger | None = None,
    *,
    recipe: str,
    memory_mb: float = DEFAULT_MEMORY_MB,
    exit_point: str | None = None,
) -> list[dict]:
    """Train branch ``branch`` (1-based) of ``recipe`` for every seed in one computation.

    The branch reads the cache at attach point ``exit_point`` (default: the cache's point
    number ``branch``), in the form its head kind needs (``HEAD_FORMS``).

    Seed s reads ``prev_outputs[s]`` and writes ``out_heads[s]``/``out_outputs[s]``,
    exactly the files (up to float rounding) a job of that seed alone writes. The
    cache is read once per job, in batches; the train split's features stay in RAM
    when their float32 size is at most ``memory_mb``. Returns per seed: ``agreement``
    per split (branch prediction == backbone prediction), ``head_macs``, ``features_id``.
    """
    log = log or logging.getLogger("calex")
    if not len(seeds) == len(prev_outputs) == len(out_heads) == len(out_outputs) > 0:
        raise CalexError("pass one --out-head, one --out-outputs and the --prev files per seed")
    cfg = parse_settings(settings)
    device = resolve_device(device)
    features_id = cache_id(features_path)
    meta = features_meta(features_path)
    if exit_point is None:
        exit_point = list(meta.get("attach_points", []))[branch - 1 : branch] or [""]
        exit_point = exit_point[0]
    point = attach_index(meta, exit_point, features_path)
    form = HEAD_FORMS[cfg.head]
    with BranchInputs(features_path, point, SPLITS, memory_mb, form) as cache:
        inputs = cache.splits
        datas, plans, fingerprints, heads = [], [], [], []
        for seed, paths in zip(seeds, prev_outputs, strict=True):
            prev = load_prev_outputs(paths, recipe, seed, features_id, branch)
            if cfg.cascade_input and branch > 1:
                require_branches(prev, range(branch - 1, branch), "cascade input")
            datas.append(split_tensors(inputs, prev, branch, cfg.cascade_input, cfg.target))
            plans.append(epoch_plan(cfg, prev, seed, branch, len(datas[-1]["train"]["y"])))
            config = _head_config(cfg, inputs["train"], datas[-1]["train"]["prev"])
            fingerprints.append({
                "recipe": recipe, "seed": seed, "branch": branch, "features_id": features_id,
                "settings": dataclasses.asdict(cfg), "head_config": config, "exit": exit_point,
                "prev": sorted(sha256_file(p["path"]) for p in prev.values()),
            })  # fmt: skip
            torch.manual_seed(seed * 1000 + branch)
            heads.append(build_head(config).to(device))
        fingerprint = fingerprints[0] if len(seeds) == 1 else fingerprints
        samples = sum(len(datas[0][sp]["y"]) for sp in SPLITS)
        values = sum(p.numel() for p in heads[0].parameters())
        needed = branch_files_bytes(samples, config["num_classes"], values) * len(seeds)
        require_space(out_outputs[0], needed, "the branch files")
        prevs = [d["train"]["prev"] for d in datas]
        fit_branches(heads, datas[0]["train"], prevs, cfg, plans, fingerprint, out_heads[0], log)
        return [
            _write_run(
                head,
                data,
                cfg,
                inputs["train"],
                seed,
                branch,
                recipe,
                features_id,
                settings,
                out_head,
                out_out,
                log,
                exit_point,
            )  # fmt: skip
            for head, data, seed, out_head, out_out in zip(
                heads, datas, seeds, out_heads, out_outputs, strict=True
            )
        ]


def _head_config(cfg, info: dict, prev) -> dict:
    """The head's constructor arguments, from the recipe and the attach point."""
    prev_dim = 0 if prev is None else int(prev.shape[1])
    return head_config(cfg.head, info["d"], info["h"], info["w"],
                       int(info["logits"].shape[1]), cfg.prototypes, prev_dim)  # fmt: skip


def _write_run(head, data, cfg, info, seed, branch, recipe, features_id, settings,
               out_head, out_outputs, log, exit_point) -> dict:  # fmt: skip
    """One seed's outputs on every split, its head and output files; its summary."""
    outputs = {sp: branch_outputs(head, data[sp], cfg.batch_size) for sp in SPLITS}
    macs = head_macs(head, info["d"], info["h"], info["w"])
    meta = branch_meta(recipe, seed, branch, features_id, macs, settings, exit_point)
    save_head(out_head, head, meta)
    write_branch_outputs(out_outputs, outputs, meta)
    drop_scratch(out_head)
    agreement = {sp: float(np.mean(outputs[sp]["pred"] == data[sp]["y"].numpy())) for sp in SPLITS}
    log.info(
        "seed %d branch %d done: agreement with the backbone %s, head MACs %d",
        seed, branch, agreement, macs,
    )  # fmt: skip
    return {"agreement": agreement, "head_macs": macs, "features_id": features_id}


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("train_branch", __doc__)
    p.add_argument("--features", required=True, help="features.h5 of the dataset and backbone")
    p.add_argument("--branch", type=int, required=True, help="1-based branch number")
    p.add_argument(
        "--exit", help="attach point of the branch (default: the cache's point --branch)"
    )
    p.add_argument(
        "--prev", nargs="*", default=[],
        help="outputs (.npz) of earlier branches, seed by seed in the order of --seed",
    )  # fmt: skip
    p.add_argument("--backbone", help="backbone.pt the cache must come from (provenance check)")
    p.add_argument("--recipe", required=True, help="recipe name (recorded and checked)")
    p.add_argument("--settings", required=True, help="JSON of the resolved recipe settings")
    p.add_argument("--seed", type=int, nargs="+", required=True, help="one or more seeds")
    add_runtime_args(p)
    p.add_argument("--out-head", nargs="+", required=True, help="branch{l}.pt per seed")
    p.add_argument("--out-outputs", nargs="+", required=True, help="branch{l}.npz per seed")
    p.add_argument(
        "--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
        help="hold the train split's features in RAM up to this float32 size; else read rows",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        if a.backbone:
            check_provenance(a.features, a.backbone)
        if len(a.prev) % len(a.seed):
            raise CalexError(f"got {len(a.prev)} --prev files for {len(a.seed)} seeds; pass "
                             "the same number of earlier branch files for every seed")  # fmt: skip
        per_seed = len(a.prev) // len(a.seed)
        prev = [a.prev[i * per_seed : (i + 1) * per_seed] for i in range(len(a.seed))]
        settings = parse_json_arg(a.settings, schema="recipes.*")
        run_train_branches(a.features, a.branch, prev, settings, a.seed,
                           a.device, a.out_head, a.out_outputs, recipe=a.recipe,
                           memory_mb=a.memory_mb, exit_point=a.exit)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
