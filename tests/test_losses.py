"""Branch losses against hand computations."""

import math

import pytest
import torch

from calex_steps.training.losses import (
    argmax_ce,
    classification_loss,
    confidence_bce,
    kd_loss,
    weighted_mean,
)

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation():
    t = 4.0
    per = []
    for s_row, t_row in zip(STUDENT, TEACHER, strict=True):
        p, q = _softmax(t_row, t), _softmax(s_row, t)
        per.append(t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
    s = torch.tensor(STUDENT, dtype=torch.float64)
    te = torch.tensor(TEACHER, dtype=torch.float64)
    assert kd_loss(s, te, t).item() == pytest.approx(sum(per) / 2, rel=1e-12)
    assert kd_loss(s, te, t, reduction="none").tolist() == pytest.approx(per, rel=1e-12)
    assert classification_loss("kd", s, te, t).item() == pytest.approx(sum(per) / 2, rel=1e-12)
    assert kd_loss(te, te, t).item() == pytest.approx(0.0, abs=1e-12)


def test_argmax_ce_uses_teacher_argmax():
    s = torch.tensor(STUDENT, dtype=torch.float64)
    te = torch.tensor(TEACHER, dtype=torch.float64)
    # teacher argmax: class 0 for row 0; tie 0/1 in row 1 -> first index, class 0
    hand = [
        -math.log(_softmax(STUDENT[0], 1.0)[0]),
        -math.log(_softmax(STUDENT[1], 1.0)[0]),
    ]
    assert argmax_ce(s, te, reduction="none").tolist() == pytest.approx(hand, rel=1e-12)
    assert classification_loss("argmax_ce", s, te).item() == pytest.approx(sum(hand) / 2)
    with pytest.raises(ValueError, match="classification target"):
        classification_loss("pteenet", s, te)


def test_confidence_bce_target_and_clamp():
    cls = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    # predictions 0, 1, 2; y* = 0, 0, 2 -> b = 1, 0, 1
    target = torch.tensor([0, 0, 2])
    conf = torch.tensor(
        [[0.0, 9.0, 9.0], [-9.0, 50.0, -9.0], [9.0, 9.0, -50.0]], dtype=torch.float64
    )
    per = confidence_bce(conf, cls, target, reduction="none")
    clamp_loss = -math.log(1e-7)
    # sample 0: R = sigmoid(0) = 0.5, b = 1; sample 1: R -> 1 clamped, b = 0;
    # sample 2: R -> 0 clamped, b = 1. Entries off the prediction never matter.
    hand = [math.log(2.0), clamp_loss, clamp_loss]
    assert per.tolist() == pytest.approx(hand, rel=1e-6)
    assert confidence_bce(conf, cls, target).item() == pytest.approx(sum(hand) / 3, rel=1e-6)
    conf.requires_grad_(True)
    confidence_bce(conf, cls, target).backward()
    assert conf.grad[0, 1] == 0.0 and conf.grad[0, 0] != 0.0


def test_weighted_mean():
    per = torch.tensor([1.0, 2.0, 4.0])
    assert weighted_mean(per, None).item() == pytest.approx(7 / 3)
    w = torch.tensor([0.0, 1.5, 1.5])
    assert weighted_mean(per, w).item() == pytest.approx((3.0 + 6.0) / 3)
