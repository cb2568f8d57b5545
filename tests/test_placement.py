"""Where exits go: MACs by arithmetic equal MACs counted on the built model, and each placement
rule picks the blocks worked out by hand (docs/exits.md)."""

from __future__ import annotations

import pytest
import torch

from calex_steps.backbones import main as lister
from calex_steps.errors import CalexError
from calex_steps.models.attach_points import candidate_names
from calex_steps.models.backbones import _CIFAR_SPECS, build_backbone
from calex_steps.models.flops import model_stage_macs
from calex_steps.workflow.placement import (
    CIFAR_ARCHS,
    block_macs,
    check_names,
    pteenet_thresholds,
    resolve_exits,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# ResNet-56 at 32 px, by hand: stem 32²·16·27 = 442,368; a stage-1 block 2·32²·16·16·9 =
# 4,718,592; the first block of stages 2 and 3 3,538,944 (zero-padding shortcut), the others
# 4,718,592; classifier 64·10. Total 125,485,696.
R56_TOTAL = 125_485_696
R56_LAYER1_3 = 442_368 + 4 * 4_718_592


def test_the_arithmetic_knows_the_architectures_calex_builds():
    assert set(CIFAR_ARCHS) == set(_CIFAR_SPECS)
    for arch, (block, depths, planes, shortcut, _) in _CIFAR_SPECS.items():
        kind = "basic" if block.__name__ == "BasicBlock" else "bottleneck"
        assert CIFAR_ARCHS[arch] == (kind, depths, planes, shortcut), arch


@pytest.mark.parametrize("arch", sorted(CIFAR_ARCHS))
@pytest.mark.parametrize("width, size, classes", [(1.0, 32, 10), (0.3, 33, 7)])
def test_arithmetic_macs_equal_the_macs_counted_on_the_model(arch, width, size, classes):
    blocks, total = block_macs(arch, width, size, classes)
    model = build_backbone(arch, width=width, num_classes=classes)
    names = [name for name, _ in blocks]
    assert names == candidate_names(model)
    counted = model_stage_macs(model, names, input_size=size)
    assert dict(blocks) == {n: counted[n] for n in names}
    assert total == counted["total"]


def test_resnet56_costs_what_the_hand_count_says():
    blocks, total = block_macs("resnet56")
    assert total == R56_TOTAL and dict(blocks)["layer1.3"] == R56_LAYER1_3
    assert block_macs("resnet56", num_classes=100)[1] == R56_TOTAL + 64 * 90


def test_sdn_on_resnet56_picks_the_blocks_the_sdn_code_hard_codes():
    # SDN's add_ic for ResNet-56: stage 1 blocks 3 and 7, stage 2 blocks 2 and 6, stage 3
    # blocks 1 and 5 (15.4, 30.4, 44.5, 59.6, 73.7, 88.7 % of the MACs: nearest, not first-past)
    picked = resolve_exits("resnet56", 1.0, 32, 10, {"placement": "sdn"})
    assert picked == ["layer1.3", "layer1.7", "layer2.2", "layer2.6", "layer3.1", "layer3.5"]


def test_pteenet_rules_take_the_first_block_past_each_threshold():
    assert pteenet_thresholds("pteenet_linear", 3) == [0.25, 0.5, 0.75]
    assert pteenet_thresholds("pteenet_pareto", 2) == pytest.approx([0.2, 0.36])
    golden = pteenet_thresholds("pteenet_golden", 4)  # 14.6, 23.6, 38.2, 61.8 %
    assert golden == pytest.approx([0.145898, 0.236068, 0.381966, 0.618034], abs=1e-6)
    # ResNet-56 blocks at 15.4 (layer1.3), 26.7 (layer1.6), 40.8 (layer2.1), 63.3 % (layer2.7)
    spec = {"placement": "pteenet_golden", "count": 4}
    assert resolve_exits("resnet56", 1.0, 32, 10, spec) == [
        "layer1.3", "layer1.6", "layer2.1", "layer2.7"
    ]  # fmt: skip
    # ResNet-20 blocks at 12.7, 24.4, 36.0, 44.7, 56.4, 68.0, 76.7 %: linear 25/50/75 %
    linear = {"placement": "pteenet_linear", "count": 3}
    assert resolve_exits("resnet20", 1.0, 32, 10, linear) == ["layer1", "layer2.1", "layer3.0"]
    # fine thresholds 5, 9.75, 14.3 % all fall in the first block: one exit per block
    fine = {"placement": "pteenet_fine", "count": 3}
    assert resolve_exits("resnet20", 1.0, 32, 10, fine) == ["layer1.0", "layer1.1", "layer1"]
    with pytest.raises(CalexError, match="fits only 9 exits") as err:
        resolve_exits("resnet20", 1.0, 32, 10, {"placement": "pteenet_fine", "count": 10})
    assert "\n" not in str(err.value)


def test_mac_fractions_land_on_the_nearest_block_and_may_not_share_one():
    spec = {"placement": "macs", "fractions": [0.5, 0.13]}  # sorted into forward order
    assert resolve_exits("resnet20", 1.0, 32, 10, spec) == ["layer1.0", "layer2.0"]
    with pytest.raises(CalexError) as err:  # 20 % and 25 % are both nearest to 24.4 %
        resolve_exits("resnet20", 1.0, 32, 10, {"placement": "macs", "fractions": [0.2, 0.25]},
                      where="recipes.six.exits")  # fmt: skip
    msg = str(err.value)
    assert msg.startswith("recipes.six.exits: placement macs 0.2,0.25 puts fractions 0.2 and")
    assert "both at layer1.1 (24.4% of the MACs)" in msg and "\n" not in msg


def test_names_are_checked_and_put_in_forward_order():
    assert check_names(["layer3.4", "layer1.8", "layer2"], "resnet56", "x") == [
        "layer1",
        "layer2",
        "layer3.4",
    ]  # fmt: skip  (layer1.8 is the last block of layer1: written layer1)
    with pytest.raises(CalexError, match="'layer4', which is not a block of resnet56"):
        check_names(["layer4"], "resnet56", "x")
    with pytest.raises(CalexError, match="names the block 'layer1' twice"):
        check_names(["layer1.8", "layer1"], "resnet56", "x")


def test_torchvision_takes_names_and_sends_a_rule_to_the_lister():
    names = ["layer2", "layer1", "features.3"]  # not checked without torch
    assert resolve_exits("torchvision:resnet18", 1.0, 224, 1000, names) == names
    with pytest.raises(CalexError) as err:
        resolve_exits("torchvision:resnet18", 1.0, 224, 1000, {"placement": "sdn"}, where="b")
    assert "--list-attach-points torchvision:resnet18 --placement sdn" in str(err.value)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"placement": "sdn", "count": 3}, "placement sdn takes no other key"),
        ({"placement": "macs"}, "placement macs takes fractions"),
        ({"placement": "pteenet_fine", "count": 0}, "count must be a whole number >= 1"),
        ({"placement": "macs", "fractions": [0.2, 1.0]}, "between 0 and 1"),
        ({"placement": "middle"}, "must be a list of block names or a rule"),
    ],
)
def test_malformed_rules_are_named(spec, expected):
    with pytest.raises(CalexError, match=expected):
        resolve_exits("resnet20", 1.0, 32, 10, spec)


def test_lister_marks_the_blocks_a_rule_picks(capsys):
    assert lister(["--list-attach-points", "resnet56", "--placement", "sdn"]) == 0
    out = capsys.readouterr().out.splitlines()
    marked = [line.split()[0] for line in out if "<- exit" in line]
    assert marked == ["layer1.3", "layer1.7", "layer2.2", "layer2.6", "layer3.1", "layer3.5"]
    row = next(line for line in out if line.startswith("layer1.3 "))
    assert "19,316,736" in row and "15.4%" in row and row.endswith("<- exit 1")
    assert "# as block names: [layer1.3, layer1.7, layer2.2" in out[-1]
    args = ["--list-attach-points", "resnet20", "--placement", "pteenet_linear", "--count", "3"]
    assert lister(args) == 0
    assert "pteenet_linear x3: layer1 (36.0%), layer2.1 (56.4%)" in capsys.readouterr().out


def test_lister_resolves_rules_on_counted_macs_for_torchvision_and_rejects_bad_ones(capsys):
    torch.manual_seed(0)
    args = ["--list-attach-points", "torchvision:resnet18", "--input-size", "32"]
    assert lister([*args, "--placement", "macs", "0.3,0.6"]) == 0
    assert capsys.readouterr().out.count("<- exit") == 2
    assert lister([*args, "--placement", "pteenet_fine"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "calex: --placement: placement pteenet_fine takes count; got ['placement']"
