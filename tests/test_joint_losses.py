"""PTEEnet and BoostNet losses against hand computations on one or two samples."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.training.joint_losses import (
    boost_chain,
    boost_loss_weights,
    boostnet_loss,
    exit_confidence,
    pteenet_chain,
    pteenet_loss,
)

LN = math.log

# One sample, two classes, two branches; y* = 0 (backbone softmax [0.6, 0.4]).
CLS = [torch.tensor([[LN(3.0), 0.0]]), torch.tensor([[0.0, LN(4.0)]])]  # ŷ1 [.75,.25], ŷ2 [.2,.8]
CONF = [torch.tensor([[0.0, 5.0]]), torch.tensor([[9.0, -LN(3.0)]])]  # h1 = .5 (class 0), h2 = .25
BACKBONE = torch.tensor([[LN(1.5), 0.0]])
COSTS = [0.3, 0.6]


def test_exit_confidence_reads_the_predicted_class():
    assert exit_confidence(CONF[0], CLS[0]).item() == pytest.approx(0.5)
    assert exit_confidence(CONF[1], CLS[1]).item() == pytest.approx(0.25)


def test_pteenet_chain_by_hand():
    h = [torch.tensor([0.5]), torch.tensor([0.25])]
    probs = [torch.tensor([[0.75, 0.25]]), torch.tensor([[0.2, 0.8]])]
    ys, cs = pteenet_chain(h, probs, torch.tensor([[0.6, 0.4]]), COSTS)
    # Ŷ2 = .25·[.2,.8] + .75·[.6,.4] = [.5,.5];  C2 = .25·.6 + .75·1 = .9
    # Ŷ1 = .5·[.75,.25] + .5·Ŷ2 = [.625,.375]; C1 = .5·.3 + .5·.9 = .6
    assert torch.allclose(ys[1], torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(ys[0], torch.tensor([[0.625, 0.375]]))
    assert cs[1].item() == pytest.approx(0.9) and cs[0].item() == pytest.approx(0.6)


def test_pteenet_loss_by_hand_and_gradients():
    cls = [c.clone().requires_grad_() for c in CLS]
    conf = [c.clone().requires_grad_() for c in CONF]
    loss = pteenet_loss(cls, conf, BACKBONE, COSTS, lam=0.9)
    expected = ((-LN(0.625) + 0.9 * 0.6) + (-LN(0.5) + 0.9 * 0.9)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # the gate h is the confidence at the prediction: only that column gets a gradient
    assert conf[0].grad[0, 0] != 0 and conf[0].grad[0, 1] == 0
    assert conf[1].grad[0, 1] != 0 and conf[1].grad[0, 0] == 0
    assert cls[0].grad.abs().sum() > 0 and cls[1].grad.abs().sum() > 0
    per_sample = pteenet_loss(CLS, CONF, BACKBONE, COSTS, 0.9, reduction="none")
    assert per_sample.shape == (1,) and per_sample.item() == pytest.approx(expected, rel=1e-6)


def test_pteenet_cost_term_rewards_early_exits():
    # with λ large, raising branch 1's gate lowers the loss: C1 falls from ~1 to c1
    low = pteenet_loss(CLS, [CONF[0] - 10, CONF[1]], BACKBONE, COSTS, lam=10.0)
    high = pteenet_loss(CLS, [CONF[0] + 10, CONF[1]], BACKBONE, COSTS, lam=10.0)
    assert high < low


def test_boost_chain_values():
    f = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]]), torch.tensor([[0.0, 1.0]])]
    chain = boost_chain(f, r=0.5)
    assert torch.equal(chain[0], torch.tensor([[1.0, 2.0]]))
    assert torch.equal(chain[1], torch.tensor([[3.5, 0.0]]))  # f2 + .5·F1
    assert torch.equal(chain[2], torch.tensor([[1.75, 1.0]]))  # f3 + .5·F2


def test_stop_gradient_keeps_branch_losses_apart():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    lin1, lin2 = nn.Linear(3, 2), nn.Linear(3, 2)
    chain = boost_chain([lin1(x), lin2(x)], r=0.5)
    F.cross_entropy(chain[1], y).backward()  # branch 2's loss alone
    assert lin1.weight.grad is None and lin1.bias.grad is None
    assert lin2.weight.grad.abs().sum() > 0
    # without the stop-gradient branch 1 would receive r times branch 2's logit gradient
    lin1.zero_grad(), lin2.zero_grad()
    F.cross_entropy(boost_chain([lin1(x), lin2(x)], 0.5, detach=False)[1], y).backward()
    assert lin1.weight.grad.abs().sum() > 0


def test_loss_weights_sum_to_branch_count():
    raw = torch.tensor([0.0, 1.0, -2.0])
    g = boost_loss_weights(raw)
    assert g.sum().item() == pytest.approx(3.0)
    sp = [LN(2.0), LN(1.0 + math.e), LN(1.0 + math.exp(-2.0))]
    assert g.tolist() == pytest.approx([3 * s / sum(sp) for s in sp], rel=1e-6)
    assert boost_loss_weights(torch.zeros(4)).tolist() == pytest.approx([1.0] * 4)


def test_boostnet_loss_by_hand():
    f = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])]
    backbone = torch.tensor([[0.0, 1.0]])  # y* = 1
    # F1 = [1, 2] -> CE = log(1 + e^-1); F2 = [3.5, 0] -> CE = log(1 + e^3.5)
    ce1, ce2 = LN(1 + math.exp(-1.0)), LN(1 + math.exp(3.5))
    assert boostnet_loss(f, backbone, 0.5, torch.zeros(2)).item() == pytest.approx(ce1 + ce2)
    raw = torch.tensor([1.0, -1.0], requires_grad=True)
    g = boost_loss_weights(raw.detach())
    loss = boostnet_loss(f, backbone, 0.5, raw)
    assert loss.item() == pytest.approx(g[0].item() * ce1 + g[1].item() * ce2, rel=1e-6)
    loss.backward()
    # descent moves weight from the larger branch-2 loss to branch 1: d/dg̃1 < 0 < d/dg̃2
    assert raw.grad[0] < 0 < raw.grad[1]


def test_chain_needs_one_cost_per_branch():
    with pytest.raises(ValueError, match="one h, prob and cost per branch"):
        pteenet_chain([torch.ones(1)], [torch.ones(1, 2)], torch.ones(1, 2), [0.1, 0.2])
