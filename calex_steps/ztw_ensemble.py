"""Stage ``ztw_ensemble``: Zero-Time-Waste's per-exit geometric ensemble (SPEC section 8).

Usage:
    python -m calex_steps.ztw_ensemble --features results/D/B/features.h5 --recipe ztw \
        --seed 0 --branches branch1.npz branch2.npz branch3.npz \
        --out ztw_ensemble1.npz ztw_ensemble2.npz ztw_ensemble3.npz

Exit l combines the log-softmax outputs of branches 1..l:
ẑ_l = (1/l)·Σ_{j≤l} exp(a_{l,j})·log_softmax(z_j) + b_l, with a_{l,·} drawn from
N(0, 0.01²) (standard deviation 0.01, seeded by run seed and exit) and the class
bias b_l = 0 at the start. Each exit's (a, b) are fitted alone by full-batch
Adam on the train split's cross-entropy to y* = argmax of the backbone logits
(the target every other recipe trains on; no ground-truth label is used).
The backbone's own output is not part of any ensemble. The exit signal is the
ensemble's largest probability, at its argmax.

The fit has l + C parameters and sees the whole split at every step, so it
runs on the CPU in seconds; it is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from calex_steps.io import CalexError, run_main, setup_logging
from calex_steps.train_branch import SPLITS, write_branch_outputs
from calex_steps.training_utils import check_finite, epoch_generator

DEFAULT_STEPS = 500
DEFAULT_LR = 0.01
A_INIT_STD = 0.01
COPIED_META = ("recipe", "seed", "branch", "features_id", "head_macs", "settings")


def ensemble_logits(log_probs: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ẑ = (1/l)·Σ_j exp(a_j)·log_probs_j + b.

    Args:
        log_probs: (l, N, C) log-softmax outputs of branches 1..l.
        a: (l,) log-weights of the members.
        b: (C,) class bias.

    Returns:
        (N, C) ensemble logits.
    """
    return (a.exp()[:, None, None] * log_probs).sum(dim=0) / log_probs.shape[0] + b


def fit_ensemble(
    log_probs: torch.Tensor, target: torch.Tensor, steps: int, lr: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Fit one exit's (a, b) by full-batch Adam on CE(ẑ, target).

    Args:
        log_probs: (l, N, C) members' log-softmax on the fitting split.
        target: (N,) int64 class targets.
        steps: Adam steps; lr: its learning rate.
        gen: generator for a's initial draw N(0, A_INIT_STD²).

    Returns:
        a (l,), b (C,) and the final cross-entropy.
    """
    num_members, _, num_classes = log_probs.shape
    a = (
        torch.randn(num_members, generator=gen, dtype=log_probs.dtype) * A_INIT_STD
    ).requires_grad_()
    b = torch.zeros(num_classes, dtype=log_probs.dtype, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    for step in range(steps):
        loss = F.cross_entropy(ensemble_logits(log_probs, a, b), target)
        check_finite(loss, f"ztw ensemble of {num_members} branch(es), step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(F.cross_entropy(ensemble_logits(log_probs, a, b), target))
    return a.detach(), b.detach(), final


@torch.no_grad()
def ensemble_outputs(log_probs: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict:
    """pred (int64 N), conf = max probability (float32 N), logits = ensemble log-probs and
    confs = ensemble probabilities (float32 N×C), the keys of a branch output file."""
    logp = F.log_softmax(ensemble_logits(log_probs, a, b), dim=1)  # N×C
    probs = logp.exp()
    conf, pred = probs.max(dim=1)
    return {
        "pred": pred.numpy().astype(np.int64),
        "conf": conf.numpy().astype(np.float32),
        "logits": logp.numpy().astype(np.float32),
        "confs": probs.numpy().astype(np.float32),
    }


def load_branch_logits(
    paths: list[str | os.PathLike], recipe: str, seed: int, features_id: str
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Branch files in cascade order -> per split (L, N, C) log-softmax, and their metas.

    Each file must be branch number = its position, of ``recipe``, ``seed`` and the
    cache ``features_id``.
    """
    members = {sp: [] for sp in SPLITS}
    metas = []
    for number, path in enumerate(paths, start=1):
        if not Path(path).is_file():
            raise CalexError(f"branch output '{path}' does not exist; run train_branch first")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("meta", *(f"{sp}_logits" for sp in SPLITS)) if k not in z.files]
            if missing:
                raise CalexError(f"'{path}' lacks {missing}; it is not a branch output file")
            meta = json.loads(str(z["meta"]))
            for sp in SPLITS:
                logits = torch.from_numpy(z[f"{sp}_logits"].astype(np.float32))
                members[sp].append(F.log_softmax(logits, dim=1))
        want = {"recipe": recipe, "seed": seed, "features_id": features_id, "branch": number}
        for key, value in want.items():
            if meta.get(key) != value:
                raise CalexError(
                    f"'{path}' has {key} {meta.get(key)!r}, expected {value!r}; pass the "
                    "branch files of one recipe, seed and feature cache, in branch order"
                )
        metas.append(meta)
    try:
        return {sp: torch.stack(v) for sp, v in members.items()}, metas
    except RuntimeError as exc:
        raise CalexError(f"the branch files disagree in sample count or classes ({exc})") from exc


def read_targets(features_path: str | os.PathLike) -> tuple[torch.Tensor, str]:
    """y* = argmax of the backbone's train logits (int64 N) and the cache's ``features_id``."""
    if not Path(features_path).is_file():
        raise CalexError(f"feature cache '{features_path}' does not exist; run cache_features")
    with h5py.File(features_path, "r") as f:
        if "features_id" not in f.attrs or "train" not in f or "logits" not in f["train"]:
            raise CalexError(
                f"'{features_path}' lacks features_id or train/logits; rerun cache_features"
            )
        fid = f.attrs["features_id"]
        logits = f["train"]["logits"][...]
    fid = fid.decode() if isinstance(fid, bytes) else str(fid)
    return torch.from_numpy(logits.argmax(axis=1).astype(np.int64)), fid


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

    Returns per exit: the fitted ``a`` and ``b`` (lists), ``train_nll`` (the final
    cross-entropy) and ``train_agreement`` (fraction of train predictions equal to y*).
    """
    log = log or logging.getLogger("calex")
    if len(branch_paths) != len(out_paths) or not branch_paths:
        raise CalexError(
            f"got {len(branch_paths)} branch files and {len(out_paths)} outputs; "
            "pass one of each per exit"
        )
    if steps < 1 or lr <= 0:
        raise CalexError(f"the ensemble fit needs steps >= 1 and lr > 0, got {steps} and {lr}")
    target, features_id = read_targets(features_path)
    members, metas = load_branch_logits(branch_paths, recipe, seed, features_id)
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


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m calex_steps.ztw_ensemble``."""
    p = argparse.ArgumentParser(
        prog="python -m calex_steps.ztw_ensemble",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--features", required=True, help="features.h5 (train logits give y*)")
    p.add_argument("--branches", nargs="+", required=True, help="branch{l}.npz, in order")
    p.add_argument("--recipe", required=True, help="recipe name (checked against the files)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="full-batch Adam steps")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    p.add_argument("--out", nargs="+", required=True, help="ztw_ensemble{l}.npz, in order")
    return p


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    log = setup_logging()
    run_ztw_ensemble(
        args.features,
        args.branches,
        args.seed,
        args.out,
        args.steps,
        args.lr,
        log,
        recipe=args.recipe,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns 0 on success, 1 on a user error (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
