"""Training one branch head on cached features: the sequential recipes (SPEC sections 5, 6, 8).

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

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from calex_steps.data.feature_cache import SPLITS
from calex_steps.errors import CalexError
from calex_steps.models.heads import PrototypeHead
from calex_steps.training.loops import EpochPlan, representations, run_stage
from calex_steps.training.losses import classification_loss, confidence_bce
from calex_steps.training.scratch import load_scratch, save_scratch
from calex_steps.training.settings import HeadSchedule, check_schedule, keep_fields
from calex_steps.training.weighting import survivor_weights

IGNORED_KEYS = ("calibration", "exit_signal", "schedule")


IGNORED_PREFIXES = ("pteenet_", "boost_")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BranchSettings(HeadSchedule):
    """The keys of a resolved recipe that sequential branch training uses."""

    weighting: str
    kd_temperature: float | None = None
    survivor_mode: str | None = None
    cascade_input: bool = False


def parse_settings(settings: dict) -> BranchSettings:
    """Check a resolved recipe dict and keep what branch training needs.

    ``calibration``, ``exit_signal``, ``schedule`` and ``pteenet_*``/``boost_*``
    keys are ignored; ``kd_temperature`` is kept only for target ``kd`` and
    ``survivor_mode`` only for weighting ``survivor``. Any other key is an error.
    """
    what = "branch-training"
    ignored = lambda key: key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)  # noqa: E731
    if settings.get("target") in ("pteenet", "boostnet"):
        raise CalexError(
            f"target '{settings['target']}' trains all branches jointly; train_branch only "
            "handles recipes with target argmax_ce or kd"
        )
    kept = keep_fields(settings, BranchSettings, what, ignored)
    check_schedule(kept, what, {
        "target": kept["target"] in ("argmax_ce", "kd"),
        "weighting": kept["weighting"] in ("uniform", "survivor"),
    })  # fmt: skip
    if kept["target"] != "kd":
        kept.pop("kd_temperature", None)
    elif float(kept.get("kd_temperature", 0.0)) <= 0:
        raise CalexError("target kd needs 'kd_temperature' > 0 in the training settings")
    if kept["weighting"] != "survivor":
        kept.pop("survivor_mode", None)
    elif kept.get("survivor_mode") not in ("sampling", "loss"):
        raise CalexError("weighting survivor needs 'survivor_mode': sampling or loss")
    return BranchSettings(**kept)


def require_branches(prev: dict[int, dict], wanted: range, why: str) -> None:
    """Error unless the earlier branches ``wanted`` are all among the --prev files."""
    missing = [b for b in wanted if b not in prev]
    if missing:
        raise CalexError(f"{why} needs the outputs of branch(es) {missing}; pass them with --prev")


def split_tensors(inputs: dict, prev: dict[int, dict], branch: int, cascade: bool) -> dict:
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
    require_branches(prev, earlier, "survivor weighting")
    w = survivor_weights([prev[b]["train_conf"] for b in earlier], num_samples=n)  # N float64
    if cfg.survivor_mode == "sampling":
        return dataclasses.replace(plan, sampling=w)
    if w.sum() <= 0:
        raise CalexError("every survivor weight is zero; check the earlier branch outputs")
    return dataclasses.replace(plan, loss_weights=torch.from_numpy(w / w.mean()).float())


def fit_branch(head, train, cfg, plan, fingerprint, out_head, log) -> None:
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
