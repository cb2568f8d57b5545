"""Train one branch head on the feature cache (SPEC sections 5, 6 and 8).

Stage ``cls`` trains the prototypes, the optional MLP and the cls layer with
Adam and a cosine schedule. Stage ``conf`` freezes all of that, computes the
representation once per split (eval mode) and trains only the conf layer on
it. Survivor weights (from the earlier branches' ``train_conf``) act either
as importance sampling (each epoch draws N indices with replacement) or as
loss weights normalised to mean 1 over the training split; both stages use
the same weights. Branch 1 has no earlier branch, so its survivor weights are
all 1 and it trains exactly like a uniform-weighted branch.

Every epoch reseeds all of its randomness from (seed, branch, stage, epoch)
and saves a scratch checkpoint, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from calex_steps.features import check_provenance, features_meta, load_branch_inputs
from calex_steps.heads import HEAD_KINDS, PrototypeHead, head_macs
from calex_steps.io import (
    CalexError,
    add_runtime_args,
    atomic_path,
    parse_json_arg,
    resolve_device,
    run_main,
    set_threads,
    setup_logging,
    sha256_file,
)
from calex_steps.losses import classification_loss, confidence_bce, weighted_mean
from calex_steps.training_utils import (
    check_finite,
    cosine_lr,
    drop_scratch,
    epoch_generator,
    load_scratch,
    save_scratch,
    set_lr,
)
from calex_steps.weighting import sample_indices, survivor_weights

SPLITS = ("train", "val", "test")
STAGES = ("cls", "conf")
IGNORED_KEYS = ("calibration", "exit_signal", "schedule")
IGNORED_PREFIXES = ("pteenet_", "boost_")


@dataclasses.dataclass(frozen=True)
class BranchSettings:
    """The keys of a resolved recipe that sequential branch training uses."""

    head: str
    target: str
    weighting: str
    prototypes: int
    cls_epochs: int
    conf_epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    kd_temperature: float | None = None
    survivor_mode: str | None = None
    cascade_input: bool = False


def parse_settings(settings: dict) -> BranchSettings:
    """Check a resolved recipe dict and keep what branch training needs.

    ``calibration``, ``exit_signal``, ``schedule`` and ``pteenet_*``/``boost_*``
    keys are ignored; ``kd_temperature`` is kept only for target ``kd`` and
    ``survivor_mode`` only for weighting ``survivor``. Any other key is an error.
    """
    fields = {f.name for f in dataclasses.fields(BranchSettings)}
    kept = {}
    for key, value in settings.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            continue
        if key not in fields:
            raise CalexError(f"unknown branch-training setting '{key}'; remove it from the recipe")
        kept[key] = value
    if kept.get("target") in ("pteenet", "boostnet"):
        raise CalexError(
            f"target '{kept['target']}' trains all branches jointly; train_branch only "
            "handles recipes with target argmax_ce or kd"
        )
    required = [
        f.name for f in dataclasses.fields(BranchSettings) if f.default is dataclasses.MISSING
    ]
    for key in required:
        if key not in kept:
            raise CalexError(f"branch-training setting '{key}' is missing; set it in the config")
    checks = {
        "head": kept["head"] in HEAD_KINDS,
        "target": kept["target"] in ("argmax_ce", "kd"),
        "weighting": kept["weighting"] in ("uniform", "survivor"),
        "prototypes": int(kept["prototypes"]) >= 1,
        "cls_epochs": int(kept["cls_epochs"]) >= 1,
        "conf_epochs": int(kept["conf_epochs"]) >= 1,
        "batch_size": int(kept["batch_size"]) >= 1,
        "lr": float(kept["lr"]) > 0,
        "weight_decay": float(kept.get("weight_decay", 0.0)) >= 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise CalexError(f"branch-training setting '{key}' has an invalid value {kept[key]!r}")
    if kept["target"] != "kd":
        kept.pop("kd_temperature", None)
    elif float(kept.get("kd_temperature", 0.0)) <= 0:
        raise CalexError("target kd needs 'kd_temperature' > 0 in the training settings")
    if kept["weighting"] != "survivor":
        kept.pop("survivor_mode", None)
    elif kept.get("survivor_mode") not in ("sampling", "loss"):
        raise CalexError("weighting survivor needs 'survivor_mode': sampling or loss")
    return BranchSettings(**kept)


def load_prev_outputs(
    paths: list[str | os.PathLike], recipe: str, seed: int, features_id: str, branch: int
) -> dict[int, dict]:
    """Earlier branches' output files by branch number, checked against this run.

    Each file's ``meta`` must name the same recipe, seed and feature cache, and
    a branch number below ``branch``; anything else is a wiring error.
    """
    prev = {}
    for path in paths:
        if not Path(path).is_file():
            raise CalexError(f"earlier branch output '{path}' does not exist")
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        if "meta" not in arrays:
            raise CalexError(f"'{path}' has no 'meta' entry; it is not a branch output file")
        meta = json.loads(str(arrays.pop("meta")))
        for key, want in (("recipe", recipe), ("seed", seed), ("features_id", features_id)):
            if meta.get(key) != want:
                raise CalexError(
                    f"earlier branch output '{path}' has {key} {meta.get(key)!r}, expected "
                    f"{want!r}; pass the outputs of the same recipe, seed and feature cache"
                )
        if not 1 <= int(meta.get("branch", 0)) < branch:
            raise CalexError(
                f"'{path}' holds branch {meta.get('branch')}, not an earlier branch of {branch}"
            )
        prev[int(meta["branch"])] = arrays | {"path": str(path)}
    return prev


def _require_branches(prev: dict[int, dict], wanted: range, why: str) -> None:
    """Error unless the earlier branches ``wanted`` are all among the --prev files."""
    missing = [b for b in wanted if b not in prev]
    if missing:
        raise CalexError(f"{why} needs the outputs of branch(es) {missing}; pass them with --prev")


def _epoch_indices(n: int, weights: np.ndarray | None, gen: torch.Generator) -> torch.Tensor:
    """One epoch's sample order: a permutation, or N weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    rng = np.random.default_rng(gen.initial_seed())
    return torch.from_numpy(sample_indices(weights, n, rng))


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """How every epoch of a branch walks its training split.

    ``sampling`` = survivor weights to draw N indices from (None: a permutation);
    ``loss_weights`` = mean-1 per-sample loss weights (None: plain mean).
    """

    n: int
    batch_size: int
    seed: int
    branch: int
    sampling: np.ndarray | None = None
    loss_weights: torch.Tensor | None = None


def run_stage(
    name: str,
    epochs: int,
    start_epoch: int,
    batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    plan: EpochPlan,
    on_epoch_end: Callable[[int], None],
    log: logging.Logger,
) -> None:
    """The epoch loop shared by both stages (and reusable by joint recipes).

    ``batch_loss(idx)`` returns (per-sample loss, per-sample hit flags) for the
    training indices ``idx``. Epochs ``start_epoch..epochs-1`` run; each one
    reseeds from (seed, branch, stage, epoch), sets the cosine learning rate,
    and ends with ``on_epoch_end(epochs_done)`` (the scratch save) and a log line.
    """
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        gen = epoch_generator(plan.seed, plan.branch, STAGES.index(name), epoch)
        torch.manual_seed(gen.initial_seed())  # dropout draws from the global generator
        set_lr(optimizer, cosine_lr(base_lr, epoch, epochs))
        order = _epoch_indices(plan.n, plan.sampling, gen)
        loss_sum, hits = 0.0, 0
        for start in range(0, plan.n, plan.batch_size):
            idx = order[start : start + plan.batch_size]
            per_sample, hit = batch_loss(idx)
            w = None if plan.loss_weights is None else plan.loss_weights[idx]
            loss = weighted_mean(per_sample, None if w is None else w.to(per_sample.device))
            check_finite(loss, f"branch {plan.branch} stage {name} epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            hits += int(hit.sum())
        on_epoch_end(epoch + 1)
        log.info(
            "branch %d stage %s epoch %d/%d loss %.4f %s %.3f %.1fs",
            plan.branch,
            name,
            epoch + 1,
            epochs,
            loss_sum / plan.n,
            "agree" if name == "cls" else "conf_acc",
            hits / plan.n,
            time.perf_counter() - began,
        )


@torch.no_grad()
def representations(
    head: PrototypeHead, x: torch.Tensor, prev: torch.Tensor | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(representation N×R, cls logits N×C) in eval mode, on the head's device."""
    head.eval()
    device = next(head.parameters()).device
    reps, logits = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        pb = None if prev is None else prev[start : start + batch_size].to(device)
        rep = head.represent(head.responses(xb), pb)
        reps.append(rep)
        logits.append(head.cls(rep))
    return torch.cat(reps), torch.cat(logits)


def _split_tensors(inputs: dict, prev: dict[int, dict], branch: int, cascade: bool) -> dict:
    """Per split: features x, teacher logits, y* and (cascade input) previous logits."""
    out = {}
    for sp in SPLITS:
        teacher = torch.from_numpy(inputs[sp]["logits"])
        prev_logits = None
        if cascade and branch > 1:
            prev_logits = torch.from_numpy(prev[branch - 1][f"{sp}_logits"].astype(np.float32))
            if len(prev_logits) != len(teacher):
                raise CalexError(f"'{prev[branch - 1]['path']}' has a different '{sp}' size")
        x = torch.from_numpy(inputs[sp]["x"])
        out[sp] = {"x": x, "teacher": teacher, "y": teacher.argmax(dim=1), "prev": prev_logits}
    return out


def epoch_plan(cfg: BranchSettings, prev: dict[int, dict], seed: int, branch: int, n: int):
    """The training split's epoch plan, with survivor weights from the earlier branches."""
    plan = EpochPlan(n=n, batch_size=cfg.batch_size, seed=seed, branch=branch)
    if cfg.weighting != "survivor" or branch == 1:
        return plan
    earlier = range(1, branch)
    _require_branches(prev, earlier, "survivor weighting")
    w = survivor_weights([prev[b]["train_conf"] for b in earlier], num_samples=n)  # N float64
    if cfg.survivor_mode == "sampling":
        return dataclasses.replace(plan, sampling=w)
    if w.sum() <= 0:
        raise CalexError("every survivor weight is zero; check the earlier branch outputs")
    return dataclasses.replace(plan, loss_weights=torch.from_numpy(w / w.mean()).float())


def _fit(head, train, cfg, plan, fingerprint, out_head, log) -> None:
    """Both training stages on the train split, resuming from a matching scratch checkpoint."""
    device = next(head.parameters()).device
    state = load_scratch(out_head, fingerprint)
    done = {"cls": 0, "conf": 0}
    if state is not None:
        head.load_state_dict(state["model"])
        done[state["stage"]] = state["epoch"]
        done["cls"] = cfg.cls_epochs if state["stage"] == "conf" else done["cls"]
        log.info("resuming stage %s after epoch %d", state["stage"], state["epoch"])

    def stage_optimizer(stage: str, params) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None and state["stage"] == stage:
            opt.load_state_dict(state["optimizer"])
        return opt

    def saver(stage: str, opt: torch.optim.Optimizer) -> Callable[[int], None]:
        def save(epoch: int) -> None:
            model, optim = head.state_dict(), opt.state_dict()
            scratch = {"fingerprint": fingerprint, "stage": stage, "epoch": epoch}
            save_scratch(out_head, scratch | {"model": model, "optimizer": optim})

        return save

    def cls_batch(idx: torch.Tensor):
        xb = train["x"][idx].to(device)
        pb = None if train["prev"] is None else train["prev"][idx].to(device)
        logits = head.cls(head.represent(head.responses(xb), pb))  # N_b×C
        teacher, y = train["teacher"][idx].to(device), train["y"][idx].to(device)
        loss = classification_loss(cfg.target, logits, teacher, cfg.kd_temperature, "none")
        return loss, logits.argmax(dim=1) == y

    opt = stage_optimizer("cls", head.classification_parameters())
    head.train()
    run_stage(
        "cls", cfg.cls_epochs, done["cls"], cls_batch, opt, cfg.lr, plan, saver("cls", opt), log
    )

    # Stage 2: the representation is frozen, so compute it once (eval mode, no dropout).
    rep, logits = representations(head, train["x"], train["prev"], cfg.batch_size)
    y = train["y"].to(device)

    def conf_batch(idx: torch.Tensor):
        idx = idx.to(device)
        conf_logits, cls_logits = head.conf(rep[idx]), logits[idx]
        loss = confidence_bce(conf_logits, cls_logits, y[idx], "none")
        pred = cls_logits.argmax(dim=1, keepdim=True)
        says_right = conf_logits.gather(1, pred).squeeze(1) > 0  # R > 0.5
        return loss, says_right == (pred.squeeze(1) == y[idx])

    opt = stage_optimizer("conf", head.conf.parameters())
    run_stage(
        "conf",
        cfg.conf_epochs,
        done["conf"],
        conf_batch,
        opt,
        cfg.lr,
        plan,
        saver("conf", opt),
        log,
    )


@torch.no_grad()
def branch_outputs(head: PrototypeHead, split: dict, batch_size: int) -> dict[str, np.ndarray]:
    """pred (int64 N), conf (float32 N), logits and confs (float32 N×C) for one split."""
    rep, logits = representations(head, split["x"], split["prev"], batch_size)
    confs = torch.sigmoid(head.conf(rep)).cpu().numpy().astype(np.float32)
    logits = logits.cpu().numpy().astype(np.float32)
    pred = logits.argmax(axis=1).astype(np.int64)
    conf = np.take_along_axis(confs, pred[:, None], axis=1)[:, 0]
    return {"pred": pred, "conf": conf, "logits": logits, "confs": confs}


def write_branch_outputs(path: str | os.PathLike, outputs: dict[str, dict], meta: dict) -> None:
    """Write ``{split}_{key}`` arrays plus the JSON ``meta`` string to an .npz, atomically."""
    arrays = {f"{sp}_{key}": value for sp, d in outputs.items() for key, value in d.items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)


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
    device = resolve_device(device) if isinstance(device, str) else device
    root = features_meta(features_path)
    features_id = str(root["features_id"]) if "features_id" in root else sha256_file(features_path)
    inputs = load_branch_inputs(features_path, branch, SPLITS)
    prev = load_prev_outputs(prev_outputs, recipe, seed, features_id, branch)
    if cfg.cascade_input and branch > 1:
        _require_branches(prev, range(branch - 1, branch), "cascade input")
    data = _split_tensors(inputs, prev, branch, cfg.cascade_input)
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
    _fit(head, data["train"], cfg, plan, fingerprint, out_head, log)

    outputs = {sp: branch_outputs(head, data[sp], cfg.batch_size) for sp in SPLITS}
    macs = head_macs(head, info["d"], info["h"], info["w"])
    meta = {
        "recipe": recipe,
        "seed": seed,
        "branch": branch,
        "features_id": features_id,
        "head_macs": macs,
        "settings": settings,
    }
    with atomic_path(out_head) as tmp:
        state = {k: v.cpu() for k, v in head.state_dict().items()}
        torch.save({"head_config": head_config, "state_dict": state, **meta}, tmp)
    write_branch_outputs(out_outputs, outputs, meta)
    drop_scratch(out_head)
    agreement = {sp: float(np.mean(outputs[sp]["pred"] == data[sp]["y"].numpy())) for sp in SPLITS}
    log.info(
        "branch %d done: agreement with the backbone %s, head MACs %d", branch, agreement, macs
    )
    return {"agreement": agreement, "head_macs": macs, "features_id": features_id}


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m calex_steps.train_branch``."""
    p = argparse.ArgumentParser(description="Train one early-exit branch on the feature cache.")
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


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    if args.backbone:
        check_provenance(args.features, args.backbone)
    run_train_branch(
        args.features,
        args.branch,
        args.prev,
        parse_json_arg(args.settings),
        args.seed,
        args.device,
        args.out_head,
        args.out_outputs,
        setup_logging(),
        recipe=args.recipe,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns 0 on success, 1 on a user error (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
