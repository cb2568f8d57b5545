"""Training all L branch heads of a joint recipe in one optimisation (docs/method.md#recipes).

Targets:
  - ``pteenet``: two stages, as the published training does. First the exit
    classifiers (prototypes and cls layers) of every branch warm up for
    ``cls_epochs`` on the mean of their cross-entropies to y*
    (:func:`calex_steps.training.joint_losses.warmup_loss`); then every head
    parameter, gates included, trains for ``conf_epochs`` on the cost-aware
    cumulative loss of :func:`calex_steps.training.joint_losses.pteenet_loss`.
    Without the warm-up the gates close before the classifiers can predict
    anything and the cumulative loss starves them (docs/baselines.md).
  - ``boostnet``: the additive loss of :func:`calex_steps.training.joint_losses.boostnet_loss`
    trains prototypes and cls layers plus the L learnable loss weights for
    ``cls_epochs``; then, per branch, the conf layer alone learns for
    ``conf_epochs`` whether the additive prediction F_l is right, on a
    representation computed once. The outputs' logits and predictions are F_l's.

PTEEnet's cost fraction of exit l counts what the sweep's FR counts: the
backbone's cumulative MACs through attach point l plus the MACs of heads 1..l,
over the backbone's total; a sample that no branch releases costs
C_{L+1} = 1 + (all heads' MACs) / total (``pteenet_exit_costs``).

The outputs are exactly those of sequential recipes: ``branch{l}.pt`` and
``branch{l}.npz`` per branch. Every epoch reseeds from (seed, stage, epoch) and
saves a scratch checkpoint beside ``branch1.pt``, so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from calex_steps.data.feature_cache import HEAD_FORMS, BranchInputs, attach_index, features_meta
from calex_steps.errors import CalexError
from calex_steps.models.heads import build_head, head_config, head_macs
from calex_steps.training.joint_losses import (
    boost_chain,
    boost_loss_weights,
    boostnet_loss,
    pteenet_loss,
    warmup_loss,
)
from calex_steps.training.loops import EpochPlan, TensorRows, representations, run_stage
from calex_steps.training.losses import confidence_bce
from calex_steps.training.scratch import load_scratch, save_scratch
from calex_steps.training.settings import HeadSchedule, check_schedule, keep_fields

JOINT_TARGETS = ("pteenet", "boostnet")


JOINT_TAG = 0  # the "branch" seed tag of the joint stage; per-branch stages use 1..L


@dataclasses.dataclass(frozen=True, kw_only=True)
class JointSettings(HeadSchedule):
    """The keys of a resolved joint recipe that training uses."""

    pteenet_lambda: float | None = None
    boost_r: float | None = None


@dataclasses.dataclass(frozen=True)
class ExitCostFractions:
    """PTEEnet's cost chain: c_l of exits 1..L and C_{L+1} of the backbone's end."""

    exits: list[float]
    final: float = 1.0


def parse_joint_settings(settings: dict) -> JointSettings:
    """Check a resolved joint recipe and keep what training needs.

    ``calibration``, ``exit_signal`` and ``search`` (resolved before training by
    :func:`calex_steps.training.joint_search.apply_search`) are ignored; ``schedule`` must be
    ``joint``, ``weighting`` ``uniform`` and ``cascade_input`` false when
    present. ``pteenet_lambda`` is required for target pteenet, ``boost_r`` for
    boostnet (each dropped for the other target). Any other key is an error.
    """
    fixed = {"schedule": "joint", "weighting": "uniform", "cascade_input": False}
    for key, value in fixed.items():
        if settings.get(key, value) != value:
            raise CalexError(f"joint training needs '{key}: {value}', got {settings[key]!r}")
    ignored = ("calibration", "exit_signal", "search", *fixed)
    kept = keep_fields(settings, JointSettings, "joint-training", lambda key: key in ignored)
    if kept["target"] not in JOINT_TARGETS:
        raise CalexError(f"target '{kept['target']}' is not a joint target {list(JOINT_TARGETS)}")
    own = "pteenet_lambda" if kept["target"] == "pteenet" else "boost_r"
    kept.pop("boost_r" if own == "pteenet_lambda" else "pteenet_lambda", None)
    if own not in kept or float(kept[own]) < 0:
        raise CalexError(f"target {kept['target']} needs '{own}' >= 0 in its recipe")
    check_schedule(kept, "joint-training")
    return JointSettings(**kept)


def exit_cost_fractions(meta: dict, path, exits: list[str] | None = None) -> list[float]:
    """c_l = stage_macs[exit_l] / stage_macs["total"] from a feature cache's root attributes
    (``exits``: the recipe's attach points; default every point of the cache)."""
    macs = meta.get("stage_macs")
    points = exits if exits is not None else meta.get("attach_points")
    if not isinstance(macs, dict) or not isinstance(points, list) or "total" not in macs:
        raise CalexError(
            f"'{path}' lacks the stage_macs/attach_points attributes; rerun cache_features"
        )
    missing = [p for p in points if p not in macs]
    if missing:
        raise CalexError(f"'{path}' stage_macs has no entry for {missing}; rerun cache_features")
    return [float(macs[p]) / float(macs["total"]) for p in points]


def pteenet_exit_costs(
    meta: dict, path, head_macs: list[int], exits: list[str] | None = None
) -> ExitCostFractions:
    """The cost chain with the heads counted, as the sweep's FR counts them (docs/method.md#flops):
    c_l = (stage_macs[attach_l] + Σ_{j<=l} head_j) / total, C_{L+1} = 1 + Σ_j head_j / total."""
    backbone = exit_cost_fractions(meta, path, exits)
    if len(head_macs) != len(backbone):
        raise CalexError(f"got {len(head_macs)} head costs for {len(backbone)} attach points")
    total = float(meta["stage_macs"]["total"])
    heads = np.cumsum(np.asarray(head_macs, dtype=np.float64)) / total
    exits = [float(c + h) for c, h in zip(backbone, heads, strict=True)]
    return ExitCostFractions(exits=exits, final=1.0 + float(heads[-1]))


class JointHeads(nn.Module):
    """L heads (any kind) and, for BoostNet, the raw loss weights g̃ (L,), initialised to 0."""

    def __init__(self, configs: list[dict], seed: int, loss_weights: bool) -> None:
        super().__init__()
        heads = []
        for branch, config in enumerate(configs, start=1):
            torch.manual_seed(seed * 1000 + branch)  # the init a sequential branch would get
            heads.append(build_head(config))
        self.heads = nn.ModuleList(heads)
        self.raw_weights = nn.Parameter(torch.zeros(len(configs))) if loss_weights else None

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(cls logits, conf logits): L tensors N×C each, from L batch inputs."""
        outs = [head(x) for head, x in zip(self.heads, xs, strict=True)]
        return [o[0] for o in outs], [o[1] for o in outs]

    def joint_parameters(self, target: str, stage: str = "joint") -> list[nn.Parameter]:
        """What a stage trains: PTEEnet's warm-up (``joint``) the classifiers, its ``gate``
        stage everything; BoostNet's joint stage all but the conf layers, plus g̃."""
        classifiers = [p for h in self.heads for p in h.classification_parameters()]
        if target == "pteenet":
            return classifiers if stage == "joint" else list(self.heads.parameters())
        return classifiers + [self.raw_weights]

    def loss_weights(self) -> list[float] | None:
        """The normalised g_l as floats (None without learnable weights)."""
        if self.raw_weights is None:
            return None
        return [float(g) for g in boost_loss_weights(self.raw_weights.detach())]


def build_joint(
    infos: list[dict],
    num_classes: int,
    cfg: JointSettings,
    seed: int,
    meta: dict,
    path,
    exits: list[str] | None = None,
) -> tuple[JointHeads, ExitCostFractions, list[dict], list[int]]:
    """The untrained heads of a joint recipe (on the CPU), PTEEnet's cost chain, the head
    configs and each head's MACs; ``infos`` = per branch the cache reader's ``d``, ``h``, ``w``;
    ``exits`` = the recipe's attach points (default every point of the cache)."""
    configs = [
        head_config(cfg.head, i["d"], i["h"], i["w"], num_classes, cfg.prototypes, 0) for i in infos
    ]
    model = JointHeads(configs, seed, loss_weights=cfg.target == "boostnet")
    macs = [head_macs(h, i["d"], i["h"], i["w"]) for h, i in zip(model.heads, infos, strict=True)]
    return model, pteenet_exit_costs(meta, path, macs, exits), configs, macs


def joint_batch_loss(
    model: JointHeads, cfg: JointSettings, costs: ExitCostFractions, stage: str = "joint"
) -> Callable:
    """``loss(xs, teacher) -> (per-sample loss N, per-branch agreement L×N)`` for the
    target and stage (PTEEnet: ``joint`` = the classifier warm-up, ``gate`` = its loss)."""

    def loss(xs: list[torch.Tensor], teacher: torch.Tensor):
        cls, conf = model(xs)
        y = teacher.argmax(dim=1)
        if cfg.target == "pteenet" and stage == "joint":
            per_sample, preds = warmup_loss(cls, teacher), cls
        elif cfg.target == "pteenet":
            per_sample = pteenet_loss(
                cls, conf, teacher, costs.exits, cfg.pteenet_lambda, "none", costs.final
            )
            preds = cls
        else:
            per_sample = boostnet_loss(cls, teacher, cfg.boost_r, model.raw_weights, "none")
            preds = boost_chain(cls, cfg.boost_r)
        return per_sample, torch.stack([p.argmax(dim=1) == y for p in preds])

    return loss


def run_joint_stage(
    model: JointHeads,
    train: dict,
    cfg: JointSettings,
    seed: int,
    optimizer: torch.optim.Optimizer,
    start_epoch: int,
    save: Callable[[int], None],
    log: logging.Logger,
    costs: ExitCostFractions,
    stage: str = "joint",
) -> None:
    """Epochs ``start_epoch..`` of the joint stage (``cls_epochs``) or of PTEEnet's gate
    stage (``conf_epochs``), on the shared epoch loop.

    The seed tag is ``JOINT_TAG`` in place of a branch number (the gate stage
    draws as a ``conf`` stage). Each log line gives the mean loss, each
    branch's agreement with y* (of F_l for BoostNet) and, for BoostNet, the
    current normalised loss weights.
    """
    batch_loss = joint_batch_loss(model, cfg, costs, stage)
    device = next(model.parameters()).device

    def loss_of(idx: torch.Tensor):
        xs = [x[idx].to(device) for x in train["xs"]]
        return batch_loss(xs, train["teacher"][idx].to(device))

    def describe(loss: float, agree: torch.Tensor) -> str:
        weights = model.loss_weights()
        shown = "" if weights is None else f" loss_weights {[round(g, 4) for g in weights]}"
        return f"loss {loss:.4f} agree {[round(float(a), 3) for a in agree]}{shown}"

    plan = EpochPlan(n=len(train["y"]), batch_size=cfg.batch_size, seed=seed, branch=JOINT_TAG)
    model.train()
    name, epochs = ("cls", cfg.cls_epochs) if stage == "joint" else ("conf", cfg.conf_epochs)
    run_stage(name, epochs, start_epoch, loss_of, optimizer, cfg.lr, plan, save, log,
              describe, label=f"{stage} stage")  # fmt: skip


def _frozen(model: JointHeads, split: dict, r: float | None, batch_size: int):
    """Eval-mode representations (L tensors N×R) and output logits (f_l, or F_l with ``r``)."""
    heads_inputs = zip(model.heads, split["xs"], strict=True)
    pairs = [representations(h, x, None, batch_size) for h, x in heads_inputs]
    reps, fs = [p[0] for p in pairs], [p[1] for p in pairs]
    return reps, (boost_chain(fs, r) if r is not None else fs)


def train_confidences(
    model: JointHeads,
    train: dict,
    cfg: JointSettings,
    seed: int,
    resume: tuple[int, int, dict | None],
    saver: Callable[[str, int, torch.optim.Optimizer], Callable[[int], None]],
    log: logging.Logger,
) -> None:
    """BoostNet's per-branch confidence stage: BCE on whether F_l's prediction is y*.

    ``resume`` = (first branch to train, its first epoch, its optimizer state or None).
    The representation and F_l are frozen, so they are computed once.
    """
    reps, f_add = _frozen(model, train, cfg.boost_r, cfg.batch_size)
    y = train["y"].to(reps[0].device)
    first_branch, first_epoch, opt_state = resume
    for branch in range(first_branch, len(model.heads) + 1):
        head, rep, logits = model.heads[branch - 1], reps[branch - 1], f_add[branch - 1]

        def conf_batch(idx, head=head, rep=rep, logits=logits):
            idx = idx.to(rep.device)
            conf_logits, z = head.conf(rep[idx]), logits[idx]
            loss = confidence_bce(conf_logits, z, y[idx], "none")
            pred = z.argmax(dim=1, keepdim=True)
            says_right = conf_logits.gather(1, pred).squeeze(1) > 0  # R > 0.5
            return loss, says_right == (pred.squeeze(1) == y[idx])

        opt = torch.optim.Adam(head.conf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = first_epoch if branch == first_branch else 0
        if branch == first_branch and opt_state is not None:
            opt.load_state_dict(opt_state)
        plan = EpochPlan(n=len(y), batch_size=cfg.batch_size, seed=seed, branch=branch)
        save = saver("conf", branch, opt)
        run_stage("conf", cfg.conf_epochs, start, conf_batch, opt, cfg.lr, plan, save, log)


def fit_joint(model, train, cfg, costs, seed, fingerprint, scratch_at, log) -> None:
    """The joint stage, then PTEEnet's gate stage or BoostNet's confidence stages,
    resuming from a scratch file (``costs``: an ``ExitCostFractions``)."""
    state = load_scratch(scratch_at, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        log.info(
            "resuming stage %s branch %d after epoch %d",
            state["stage"],
            state["branch"],
            state["epoch"],
        )

    def saver(stage: str, branch: int, opt: torch.optim.Optimizer) -> Callable[[int], None]:
        def save(epoch: int) -> None:
            scratch = {"fingerprint": fingerprint, "stage": stage, "branch": branch}
            scratch |= {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict()}
            save_scratch(scratch_at, scratch)

        return save

    def optimizer(stage: str) -> tuple[torch.optim.Optimizer, int]:
        """A fresh Adam for ``stage``, or the saved one when the scratch file is inside it."""
        params = model.joint_parameters(cfg.target, stage)
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is None or state["stage"] != stage:
            return opt, 0
        opt.load_state_dict(state["optimizer"])
        return opt, state["epoch"]

    at = "joint" if state is None else state["stage"]
    if at == "joint":
        opt, start = optimizer("joint")
        run_joint_stage(model, train, cfg, seed, opt, start, saver("joint", 0, opt), log, costs)
    if cfg.target == "pteenet":
        opt, start = optimizer("gate")
        save = saver("gate", 0, opt)
        run_joint_stage(model, train, cfg, seed, opt, start, save, log, costs, "gate")
    else:
        resume = (1, 0, None)
        if at != "joint":
            resume = (state["branch"], state["epoch"], state["optimizer"])
        train_confidences(model, train, cfg, seed, resume, saver, log)


@torch.no_grad()
def joint_outputs(model: JointHeads, split: dict, r: float | None, batch_size: int) -> list[dict]:
    """Per branch: pred (int64 N), conf (float32 N), logits and confs (float32 N×C).

    With ``r`` (BoostNet) the logits and predictions are the additive F_l.
    """
    reps, logits = _frozen(model, split, r, batch_size)
    outs = []
    for head, rep, z in zip(model.heads, reps, logits, strict=True):
        confs = torch.sigmoid(head.conf(rep)).cpu().numpy().astype(np.float32)  # N×C
        z = z.cpu().numpy().astype(np.float32)
        pred = z.argmax(axis=1).astype(np.int64)
        conf = np.take_along_axis(confs, pred[:, None], axis=1)[:, 0]
        outs.append({"pred": pred, "conf": conf, "logits": z, "confs": confs})
    return outs


DEFAULT_MEMORY_MB = 2048.0  # the train splits' float32 features up to this size stay in RAM


def open_joint_splits(features_path, exits: list[str], stack, memory_mb: float, splits,
                      head: str = "basic"):  # fmt: skip
    """The recipe's L attach points ``exits`` of the cache, in the form ``head`` reads, open
    for reading in batches until ``stack`` (a ``contextlib.ExitStack``) closes; joint
    training and the baseline search share it.

    Each attach point's train split is held in RAM when its float32 size is at most
    ``memory_mb / L``; everything else is read from the file one batch at a time.

    Returns:
        per split: ``xs`` (L row sources: ``x[idx]`` is a float32 CPU tensor), backbone
        ``teacher`` logits (N×C), y* (N), ``labels`` (N); and per branch the train
        split's reader dict (``d``, ``h``, ``w``, ...).
    """
    share = memory_mb / max(len(exits), 1)
    meta = features_meta(features_path)
    points = [attach_index(meta, e, features_path) for e in exits]
    per_branch = [
        stack.enter_context(BranchInputs(features_path, p, splits, share, HEAD_FORMS[head])).splits
        for p in points
    ]
    out = {}
    for sp in splits:
        first = per_branch[0][sp]
        teacher = torch.from_numpy(first["logits"])
        xs = [TensorRows(inputs[sp]["x"]) for inputs in per_branch]
        out[sp] = {"xs": xs, "teacher": teacher, "y": teacher.argmax(dim=1),
                   "labels": first["labels"]}  # fmt: skip
    return out, [inputs["train"] for inputs in per_branch]
