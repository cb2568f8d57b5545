"""Losses of the jointly trained baselines (docs/method.md#recipes): PTEEnet and BoostNet.

Both take the L branches' outputs as lists (branch 1 first) and return one
value per sample (``reduction="none"``) or the batch mean, like
:mod:`calex_steps.training.losses`. The target is always y* = argmax of the backbone logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from calex_steps.training.losses import _reduce

LOG_CLAMP = 1e-12  # Ŷ_l[y*] is a mixture of softmaxes; guard the log against underflow to 0


def exit_confidence(conf_logits: torch.Tensor, cls_logits: torch.Tensor) -> torch.Tensor:
    """h = sigmoid(conf_logits) at Ĉ = argmax cls_logits (no gradient through Ĉ); N×C -> N."""
    pred = cls_logits.detach().argmax(dim=1, keepdim=True)  # N×1
    return torch.sigmoid(conf_logits.gather(1, pred).squeeze(1))


def pteenet_chain(
    h: Sequence[torch.Tensor],
    probs: Sequence[torch.Tensor],
    backbone_probs: torch.Tensor,
    costs: Sequence[float],
    final_cost: float = 1.0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The cumulative prediction and cost of every exit, built from the end.

    Args:
        h: L tensors (N,): exit probability of branch l (its confidence R at Ĉ).
        probs: L tensors (N, C): softmax of branch l.
        backbone_probs: (N, C) backbone softmax, Ŷ_{L+1}.
        costs: L numbers c_l, the cumulative cost fraction of exit l.
        final_cost: C_{L+1}, the cost fraction of a sample no branch releases.

    Returns:
        (Ŷ, C): lists over l = 1..L of (N, C) and (N,) tensors with
        Ŷ_l = h_l·ŷ_l + (1−h_l)·Ŷ_{l+1} and C_l = h_l·c_l + (1−h_l)·C_{l+1}.
    """
    if not len(h) == len(probs) == len(costs) >= 1:
        raise ValueError(
            f"need one h, prob and cost per branch; got {len(h)}, {len(probs)}, {len(costs)}"
        )
    y_next = backbone_probs  # N×C
    c_next = torch.full_like(h[0], float(final_cost))  # N
    ys, cs = [], []
    for h_l, p_l, c_l in zip(reversed(h), reversed(probs), reversed(costs), strict=True):
        y_next = h_l[:, None] * p_l + (1.0 - h_l[:, None]) * y_next
        c_next = h_l * float(c_l) + (1.0 - h_l) * c_next
        ys.append(y_next)
        cs.append(c_next)
    return ys[::-1], cs[::-1]


def pteenet_loss(
    cls_logits: Sequence[torch.Tensor],
    conf_logits: Sequence[torch.Tensor],
    backbone_logits: torch.Tensor,
    costs: Sequence[float],
    lam: float,
    reduction: str = "mean",
    final_cost: float = 1.0,
) -> torch.Tensor:
    """mean over l of [−log Ŷ_l[y*] + λ·C_l] (docs/method.md#recipes, PTEEnet).

    Args:
        cls_logits, conf_logits: L tensors (N, C) each, one per branch.
        backbone_logits: (N, C); its softmax closes the chain and its argmax is y*.
        costs: L cumulative cost fractions c_l.
        lam: λ, the weight of the expected cost.
        reduction: ``mean`` or ``none``.
        final_cost: C_{L+1} (1 = the backbone alone; more when the heads' MACs count).
    """
    teacher = backbone_logits.detach()
    y_star = teacher.argmax(dim=1, keepdim=True)  # N×1
    h = [exit_confidence(z, c) for z, c in zip(conf_logits, cls_logits, strict=True)]
    probs = [F.softmax(c, dim=1) for c in cls_logits]
    ys, cs = pteenet_chain(h, probs, F.softmax(teacher, dim=1), costs, final_cost)
    terms = [
        -torch.log(y_l.gather(1, y_star).squeeze(1).clamp_min(LOG_CLAMP)) + lam * c_l
        for y_l, c_l in zip(ys, cs, strict=True)
    ]
    return _reduce(torch.stack(terms).mean(dim=0), reduction)


def warmup_loss(cls_logits: Sequence[torch.Tensor], backbone_logits: torch.Tensor) -> torch.Tensor:
    """mean over l of CE(z_l, y*), per sample (N,): PTEEnet's classifier warm-up.

    The gates h_l multiply each branch's softmax in the cumulative loss, so a
    branch whose gate closes early gets almost no gradient; the published
    training therefore fits the exit classifiers alone before the cost-aware
    loss switches on.
    """
    y_star = backbone_logits.detach().argmax(dim=1)  # N
    per_branch = [F.cross_entropy(z, y_star, reduction="none") for z in cls_logits]
    return torch.stack(per_branch).mean(dim=0)


def boost_chain(f: Sequence[torch.Tensor], r: float, detach: bool = True) -> list[torch.Tensor]:
    """Additive logits F_l = f_l + r·F_{l−1}, F_0 = 0 (BoostNet); L tensors (N, C) each.

    With ``detach`` the earlier sum enters as stopgrad(r·F_{l−1}): branch l's
    loss then reaches only branch l's parameters. The values are the same.
    """
    out, prev = [], None
    for f_l in f:
        if prev is None:
            cur = f_l
        else:
            cur = f_l + r * (prev.detach() if detach else prev)
        out.append(cur)
        prev = cur
    return out


def boost_loss_weights(raw: torch.Tensor) -> torch.Tensor:
    """g_l = softplus(g̃_l), rescaled to sum to L (the number of branches); (L,) -> (L,)."""
    g = F.softplus(raw)
    return g * (raw.shape[0] / g.sum())


def boostnet_loss(
    f: Sequence[torch.Tensor],
    backbone_logits: torch.Tensor,
    r: float,
    raw_weights: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Σ_l g_l·CE(f_l + stopgrad(r·F_{l−1}), y*) (docs/method.md#recipes, BoostNet).

    Args:
        f: L tensors (N, C), the branches' own logits f_l.
        backbone_logits: (N, C); y* = its argmax.
        r: the additive factor.
        raw_weights: (L,) learnable g̃; the normalised g_l multiply the branch losses.
        reduction: ``mean`` or ``none``.
    """
    y_star = backbone_logits.detach().argmax(dim=1)  # N
    g = boost_loss_weights(raw_weights)  # L
    per_branch = torch.stack(
        [F.cross_entropy(z, y_star, reduction="none") for z in boost_chain(f, r)]
    )  # L×N
    return _reduce((g[:, None] * per_branch).sum(dim=0), reduction)
