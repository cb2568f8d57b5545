"""Zero-Time-Waste's per-exit geometric ensemble (docs/method.md#recipes), as pure torch functions.

Exit l combines the log-softmax outputs of branches 1..l:
ẑ_l = (1/l)·Σ_{j≤l} exp(a_{l,j})·log_softmax(z_j) + b_l, with a_{l,·} drawn from
N(0, 0.01²) (standard deviation 0.01, seeded by run seed and exit) and the class
bias b_l = 0 at the start. Each exit's (a, b) are fitted alone by full-batch
Adam on the train split's cross-entropy to y* = argmax of the backbone logits.
The exit signal is the ensemble's largest probability, at its argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from calex_steps.training.loops import check_finite

DEFAULT_STEPS = 500


DEFAULT_LR = 0.01


A_INIT_STD = 0.01


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
