"""Cost accounting: MAC counting, stage MACs (docs/method.md#flops numbers), cascade cost and FR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from calex_steps.cascade import cascade_cost, flops_reduction
from calex_steps.errors import CalexError
from calex_steps.flops import count_macs, stage_macs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet18_stage_macs_match_spec():
    assert stage_macs("resnet18", width=1.0, num_classes=20) == {
        "layer1": 152_764_416,
        "layer2": 286_982_144,
        "layer3": 421_199_872,
        "total": 555_427_840,
    }


def test_resnet50_stage_macs_match_spec():
    assert stage_macs("resnet50", width=1.0, num_classes=20) == {
        "layer1": 219_873_280,
        "layer2": 555_417_600,
        "layer3": 1_033_568_256,
        "total": 1_297_850_368,
    }


def test_width_half_resnet18_layer1_matches_hand_formula():
    pixels, c = 32 * 32, 32  # width 0.5: 32 channels, full resolution in layer1
    stem = pixels * c * 3 * 9
    four_convs = 4 * pixels * c * c * 9
    macs = stage_macs("resnet18", width=0.5, num_classes=10)
    assert macs["layer1"] == stem + four_convs == 38_633_472


def test_resnet20_and_inner_attach_points():
    # stem 442,368; each stage of 6 convs; linear 64×10
    assert stage_macs("resnet20") == {
        "layer1": 14_598_144,
        "layer2": 27_574_272,
        "layer3": 40_550_400,
        "total": 40_551_040,
    }
    inner = stage_macs("resnet56", attach_points=("layer2", "layer3.4"))
    per_block = 2 * 64 * 64 * 64 * 9  # two 3×3 convs 64->64 at 8×8
    first_block = 64 * 64 * 32 * 9 + 64 * 64 * 64 * 9  # strided conv from 32 channels
    assert list(inner) == ["layer2", "layer3.4", "total"]
    assert inner["layer3.4"] - inner["layer2"] == first_block + 4 * per_block


def test_stage_macs_rejects_unknown_attach_point():
    with pytest.raises(CalexError, match="attach point 'layer4'.*layer3"):
        stage_macs("resnet20", attach_points=("layer4",))


def test_count_macs_conv_and_linear_by_hand():
    grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
    assert count_macs(grouped, torch.zeros(1, 4, 5, 5)) == 6 * 25 * 2 * 9
    depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
    assert count_macs(depthwise, torch.zeros(3, 8, 8, 8)) == 8 * 16 * 1 * 9
    linear = nn.Linear(7, 3)
    assert count_macs(linear, torch.zeros(5, 7)) == count_macs(linear, torch.zeros(1, 7)) == 21


def test_count_macs_skips_norm_activation_pooling_and_restores_mode():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).train()
    assert count_macs(model, torch.zeros(1, 3, 6, 6)) == 4 * 36 * 27 + 8
    assert model.training


def test_cascade_cost_and_flops_reduction_by_hand():
    costs = cascade_cost([10, 20, 30], [1, 2, 3], total_macs=50)
    assert costs == [11, 23, 36, 56]
    fr = flops_reduction(np.array([0, 3, 1, 1]), costs, total_macs=50)
    assert fr == pytest.approx(1 - (11 + 56 + 23 + 23) / 4 / 50)
    assert flops_reduction(np.array([3, 3]), costs, 50) == pytest.approx(-0.12)


def test_cascade_cost_and_fr_reject_bad_input():
    with pytest.raises(CalexError, match="one head per attach point"):
        cascade_cost([10, 20], [1], total_macs=50)
    with pytest.raises(CalexError, match=r"exit_branch values must lie in 0\.\.3, got 0\.\.4"):
        flops_reduction(np.array([0, 4]), [11, 23, 36, 56], total_macs=50)
