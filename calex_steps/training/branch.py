"""Training one branch head on cached features: the sequential recipes (docs/method.md#training).

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
Several seeds of one branch train together (``fit_branches``: one grouped
computation, ``calex_steps.training.grouped``), each as it would alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from calex_steps.data.feature_cache import SPLITS
from calex_steps.errors import CalexError
from calex_steps.training.adam import Adam
from calex_steps.training.grouped import group_heads
from calex_steps.training.loops import EpochPlan, TensorRows, representations, run_group_stage
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
            "handles recipes with target argmax_ce, kd or labels"
        )
    kept = keep_fields(settings, BranchSettings, what, ignored)
    check_schedule(kept, what, {
        "target": kept["target"] in ("argmax_ce", "kd", "labels"),
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


def split_tensors(
    inputs: dict, prev: dict[int, dict], branch: int, cascade: bool, target: str = "argmax_ce"
) -> dict:
    """Per split: features x, teacher logits, y* (``y``), the labels, the labels the
    confidence learns to predict (``conf_y``: the true labels for target ``labels``, else
    y*) and (cascade input) the previous branch's logits."""
    out = {}
    for sp in SPLITS:
        teacher = torch.from_numpy(inputs[sp]["logits"])
        prev_logits = None
        if cascade and branch > 1:
            prev_logits = torch.from_numpy(prev[branch - 1][f"{sp}_logits"].astype(np.float32))
            if len(prev_logits) != len(teacher):
                raise CalexError(f"'{prev[branch - 1]['path']}' has a different '{sp}' size")
        x = TensorRows(inputs[sp]["x"])  # float32 rows read batch by batch
        y_star = teacher.argmax(dim=1)
        labels = torch.from_numpy(np.asarray(inputs[sp]["labels"], dtype=np.int64))
        if target == "labels" and sp == "train" and labels.min() < 0:
            raise CalexError("target labels needs the train split's labels; the cache has none")
        conf_y = labels if target == "labels" else y_star
        out[sp] = {"x": x, "teacher": teacher, "y": y_star, "labels": labels,
                   "conf_y": conf_y, "prev": prev_logits}  # fmt: skip
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


def _stacked(rows, idxs: list[torch.Tensor], device) -> torch.Tensor:
    """Run s's rows ``idxs[s]`` of ``rows`` (shared by every run) as S×B×... on ``device``."""
    flat = rows[torch.cat(idxs)]
    return flat.view(len(idxs), -1, *flat.shape[1:]).to(device)


def fit_branches(heads, train, prevs, cfg, plans, fingerprint, out_head, log) -> None:
    """Both training stages of S runs of one branch (one per seed) in one computation.

    ``heads``: S freshly seeded heads of one configuration (trained in place);
    ``train``: the shared train split (``x`` rows, ``teacher`` logits, ``y``, ``labels``,
    ``conf_y``); ``prevs``: each
    run's previous-branch logits (N×C_prev tensors, or None); ``plans``: each run's
    ``EpochPlan``. Run s ends with the head it would have trained alone (up to float
    rounding). Resumes from a scratch checkpoint beside ``out_head`` made with the same
    ``fingerprint``.
    """
    device = next(heads[0].parameters()).device
    group = group_heads(heads).to(device)
    state = load_scratch(out_head, fingerprint)
    done = {"cls": 0, "conf": 0}
    if state is not None:
        group.load_state_dict(state["model"])
        done[state["stage"]] = state["epoch"]
        done["cls"] = cfg.cls_epochs if state["stage"] == "conf" else done["cls"]
        log.info("resuming stage %s after epoch %d", state["stage"], state["epoch"])

    def stage_optimizer(stage: str, params) -> Adam:
        opt = Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None and state["stage"] == stage:
            opt.load_state_dict(state["optimizer"])
        return opt

    def saver(stage: str, opt: Adam) -> Callable[[int], None]:
        def save(epoch: int) -> None:
            model, optim = group.state_dict(), opt.state_dict()
            scratch = {"fingerprint": fingerprint, "stage": stage, "epoch": epoch}
            save_scratch(out_head, scratch | {"model": model, "optimizer": optim})

        return save

    def cls_batch(idxs: list[torch.Tensor]):
        xb = _stacked(train["x"], idxs, device)  # S×B×P or S×B×d×H×W
        pb = (
            None
            if prevs[0] is None
            else torch.stack([p[i] for p, i in zip(prevs, idxs, strict=True)]).to(device)
        )
        logits = group.layer("cls", group.represent(group.responses(xb), pb))  # S×B×C
        teacher, y = _stacked(train["teacher"], idxs, device), _stacked(train["y"], idxs, device)
        labels = (
            _stacked(train["labels"], idxs, device).flatten() if cfg.target == "labels" else None
        )
        loss = classification_loss(cfg.target, logits.flatten(0, 1), teacher.flatten(0, 1),
                                   cfg.kd_temperature, "none", labels)  # fmt: skip
        return list(loss.view(len(idxs), -1)), list(logits.argmax(dim=-1) == y)

    opt = stage_optimizer("cls", group.classification_parameters())
    group.train()
    run_group_stage("cls", cfg.cls_epochs, done["cls"], cls_batch, opt, cfg.lr, plans,
                    saver("cls", opt), log, on_epoch_start=group.reseed_dropout)  # fmt: skip
    group.copy_to(heads)

    # Stage 2: the representation is frozen, so compute it once (eval mode, no dropout).
    frozen = [
        representations(h, train["x"], p, cfg.batch_size) for h, p in zip(heads, prevs, strict=True)
    ]
    rep = torch.stack([f[0] for f in frozen])  # S×N×R
    logits = torch.stack([f[1] for f in frozen])  # S×N×C
    y = train["conf_y"].to(device)  # what a right prediction is (docs/method.md)
    runs = torch.arange(len(heads), device=device).unsqueeze(1)  # S×1

    def conf_batch(idxs: list[torch.Tensor]):
        idx = torch.stack(idxs).to(device)  # S×B
        conf_logits, cls_logits, yb = group.layer("conf", rep[runs, idx]), logits[runs, idx], y[idx]
        loss = confidence_bce(conf_logits.flatten(0, 1), cls_logits.flatten(0, 1),
                              yb.flatten(), "none")  # fmt: skip
        pred = cls_logits.argmax(dim=-1, keepdim=True)
        says_right = conf_logits.gather(-1, pred).squeeze(-1) > 0  # R > 0.5
        return list(loss.view(len(idxs), -1)), list(says_right == (pred.squeeze(-1) == yb))

    opt = stage_optimizer("conf", group.conf_parameters())
    run_group_stage("conf", cfg.conf_epochs, done["conf"], conf_batch, opt, cfg.lr, plans,
                    saver("conf", opt), log)  # fmt: skip
    group.copy_to(heads)


@torch.no_grad()
def branch_outputs(head, split: dict, batch_size: int) -> dict[str, np.ndarray]:
    """pred (int64 N), conf (float32 N), logits and confs (float32 N×C) for one split."""
    rep, logits = representations(head, split["x"], split["prev"], batch_size)
    confs = torch.sigmoid(head.conf(rep)).cpu().numpy().astype(np.float32)
    logits = logits.cpu().numpy().astype(np.float32)
    pred = logits.argmax(axis=1).astype(np.int64)
    conf = np.take_along_axis(confs, pred[:, None], axis=1)[:, 0]
    return {"pred": pred, "conf": conf, "logits": logits, "confs": confs}
