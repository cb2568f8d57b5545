"""Branch training losses (docs/method.md#training).

Every loss takes ``reduction`` = ``"mean"`` (batch mean) or ``"none"``
(one value per sample), so sample weights can be applied by the caller
(:func:`weighted_mean`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONF_CLAMP = 1e-7


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` (``mean`` or ``none``) to a length-N loss vector."""
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction '{reduction}' is not 'mean' or 'none'")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)); both logits N×C."""
    t = float(temperature)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)  # N×C
    log_p_student = F.log_softmax(student_logits / t, dim=1)  # N×C
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)  # N
    return _reduce(t * t * kl, reduction)


def argmax_ce(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of the student (N×C logits) to y* = argmax of the teacher logits."""
    target = teacher_logits.argmax(dim=1)
    return F.cross_entropy(student_logits, target, reduction=reduction)


def classification_loss(
    target: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float | None = None,
    reduction: str = "mean",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The recipe's classification loss: ``argmax_ce``, ``kd`` (needs ``temperature``) or
    ``labels`` (cross-entropy to the true labels, N int64; needs ``labels``)."""
    if target == "labels":
        if labels is None:
            raise ValueError("the labels target needs the true labels")
        return F.cross_entropy(student_logits, labels, reduction=reduction)
    if target == "argmax_ce":
        return argmax_ce(student_logits, teacher_logits, reduction)
    if target == "kd":
        if temperature is None:
            raise ValueError("the kd target needs a temperature")
        return kd_loss(student_logits, teacher_logits, temperature, reduction)
    raise ValueError(f"classification target '{target}' is not 'argmax_ce', 'kd' or 'labels'")


def confidence_bce(
    conf_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    target_pred: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """BCE of the confidence at the branch's own prediction (docs/method.md#training).

    Args:
        conf_logits: N×C pre-sigmoid confidences.
        cls_logits: N×C class logits; Ĉ = argmax (no gradient flows through it).
        target_pred: N int64, y* (the backbone's prediction).
        reduction: ``mean`` or ``none``.

    The target is b = 1 when Ĉ == y*, else 0; R = sigmoid(conf_logits)[Ĉ] is
    clamped to [1e-7, 1 − 1e-7] before the logarithms.
    """
    pred = cls_logits.detach().argmax(dim=1, keepdim=True)  # N×1
    r = torch.sigmoid(conf_logits.gather(1, pred).squeeze(1))  # N
    r = r.clamp(CONF_CLAMP, 1.0 - CONF_CLAMP)
    b = (pred.squeeze(1) == target_pred).to(r.dtype)  # N
    per_sample = -(b * torch.log(r) + (1.0 - b) * torch.log1p(-r))
    return _reduce(per_sample, reduction)


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean(weights · per_sample), or the plain mean when ``weights`` is None.

    Weights are expected normalised to mean 1 over the training set (not per
    batch), so the expectation matches the importance-sampling estimator.
    """
    if weights is None:
        return per_sample.mean()
    return (weights.to(per_sample.dtype) * per_sample).mean()
