"""Stage `ztw_ensemble`: fit Zero-Time-Waste's per-exit geometric ensemble (docs/method.md#recipes).

    python -m calex_steps.stages.ztw_ensemble --features results/D/B/features.h5 --recipe ztw \
        --seed 0 --branches branch1.npz branch2.npz branch3.npz \
        --out ztw_ensemble1.npz ztw_ensemble2.npz ztw_ensemble3.npz

The ensemble is ``calex_steps.training.ztw``; each exit's (a, b) are fitted on
the train split against what the heads were trained on: y* = argmax of the
backbone logits, or the true labels for a recipe with target ``labels``.
The backbone's own output is not part of any ensemble. The fit has l + C
parameters and sees the whole split at every step, so it runs on the CPU in
seconds; it is deterministic for a seed.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from calex_steps.cli import stage_main, stage_parser
from calex_steps.data.branch_files import read_branch_logits, write_branch_outputs
from calex_steps.data.feature_cache import SPLITS, read_train_targets
from calex_steps.errors import CalexError
from calex_steps.training.loops import epoch_generator
from calex_steps.training.ztw import DEFAULT_LR, DEFAULT_STEPS, ensemble_outputs, fit_ensemble

COPIED_META = ("recipe", "seed", "branch", "features_id", "head_macs", "settings", "attach_point")


def run_ztw_ensemble(
    features_path: str | os.PathLike,
    branch_paths: list[str | os.PathLike],
    seed: int,
    out_paths: list[str | os.PathLike],
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    log: logging.Logger | None = None,
    *,
    recipe: str,
) -> list[dict]:
    """Fit the ensemble of every exit on train and write ``ztw_ensemble{l}.npz`` for each.

    The ensemble fits the cross-entropy to y*, or to the true labels when the heads were
    trained on them (target ``labels``). Returns per exit: the fitted ``a`` and ``b``
    (lists), ``train_nll`` (the final cross-entropy) and ``train_agreement`` (fraction of
    train predictions equal to that target).
    """
    log = log or logging.getLogger("calex")
    if len(branch_paths) != len(out_paths) or not branch_paths:
        raise CalexError(
            f"got {len(branch_paths)} branch files and {len(out_paths)} outputs; "
            "pass one of each per exit"
        )
    if steps < 1 or lr <= 0:
        raise CalexError(f"the ensemble fit needs steps >= 1 and lr > 0, got {steps} and {lr}")
    features_id = read_train_targets(features_path)[1]
    logits, metas = read_branch_logits(branch_paths, recipe, seed, features_id, SPLITS)
    # the ensemble learns what its heads learnt: the true labels, or y* (docs/baselines.md)
    on_labels = (metas[0].get("settings") or {}).get("target") == "labels"
    target = torch.from_numpy(read_train_targets(features_path, labels=on_labels)[0])
    try:
        members = {
            sp: torch.stack([F.log_softmax(torch.from_numpy(z), dim=1) for z in zs])
            for sp, zs in logits.items()
        }  # split -> (L, N, C)
    except RuntimeError as exc:
        raise CalexError(f"the branch files disagree in sample count or classes ({exc})") from exc
    if members["train"].shape[1] != len(target):
        raise CalexError(
            f"the branch files hold {members['train'].shape[1]} train samples but "
            f"'{features_path}' holds {len(target)}; pass the files made from this cache"
        )
    summary = []
    for exit_l, out in enumerate(out_paths, start=1):
        gen = epoch_generator(seed, exit_l)
        a, b, nll = fit_ensemble(members["train"][:exit_l], target, steps, lr, gen)
        outputs = {sp: ensemble_outputs(members[sp][:exit_l], a, b) for sp in SPLITS}
        meta = {k: metas[exit_l - 1][k] for k in COPIED_META if k in metas[exit_l - 1]}
        meta |= {
            "exit_signal": "ztw_ensemble",
            "ensemble_a": a.tolist(),
            "ensemble_b": b.tolist(),
            "ensemble_steps": steps,
            "ensemble_lr": lr,
            "ensemble_train_nll": nll,
        }
        write_branch_outputs(out, outputs, meta)
        agree = float(np.mean(outputs["train"]["pred"] == target.numpy()))
        log.info(
            "exit %d: a %s, train CE %.4f, train agreement %.3f", exit_l, a.tolist(), nll, agree
        )
        summary.append(
            {"a": a.tolist(), "b": b.tolist(), "train_nll": nll, "train_agreement": agree}
        )
    return summary


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("ztw_ensemble", __doc__)
    p.add_argument("--features", required=True, help="features.h5 (train logits give y*)")
    p.add_argument("--branches", nargs="+", required=True, help="branch{l}.npz, in order")
    p.add_argument("--recipe", required=True, help="recipe name (checked against the files)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="full-batch Adam steps")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    p.add_argument("--out", nargs="+", required=True, help="ztw_ensemble{l}.npz, in order")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_ztw_ensemble(a.features, a.branches, a.seed, a.out, a.steps, a.lr, recipe=a.recipe)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
