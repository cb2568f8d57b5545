"""The configuration schema: shipped configs pass, mistakes stop with one line."""

import copy
from pathlib import Path

import pytest
import yaml

from calex_steps.errors import CalexError
from calex_steps.workflow.config import (
    branch_recipe,
    own_branch_recipes,
    reference_markdown,
    resolve_recipe,
    split_source,
    sweep_settings,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def merged(*names: str) -> dict:
    """Layer config files the way Snakemake does (nested dicts merge, the rest replaces)."""

    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    config = {}
    for name in names:
        update(config, load(name))
    return config


@pytest.fixture
def full():
    return load("workflow_config.yaml")


def test_shipped_configs_pass():
    full = validate_config(load("workflow_config.yaml"))
    assert full["study"]["seeds"] == [0, 1, 2]
    assert full["pretrain"]["epochs"] == 200
    assert set(full["study"]["recipes"]) == {
        "calexnet",
        "noalign",
        "align_only",
        "kd_only",
        "pteenet",
        "ztw",
        "boostnet",
    }
    for overlay in sorted((ROOT / "config").glob("*.yaml")):
        validate_config(merged("workflow_config.yaml", f"config/{overlay.name}"))


def test_misspelt_key_is_named(full):
    full["recipes"]["calexnet"]["weightng"] = "survivor"
    with pytest.raises(CalexError) as err:
        validate_config(full)
    msg = str(err.value)
    assert "recipes.calexnet.weightng" in msg and "weighting" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("sweep", "margins"), [0.1, 1.5], "sweep.margins.1' = 1.5 must be <= 1"),
        (("pretrain", "epochs"), "ten", "pretrain.epochs' = 'ten' must be of type integer"),
        (
            ("recipes", "noalign", "target"),
            "mse",
            "allowed: ['argmax_ce', 'kd', 'labels', 'pteenet', 'boostnet']",
        ),
        (("device",), "gpu", "device' = 'gpu' must match"),
        (("training", "lr"), 0, "training.lr' = 0 must be > 0"),
    ],
)
def test_bad_values_are_named(full, path, value, expected):
    node = full
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CalexError, match=None) as err:
        validate_config(full)
    assert expected in str(err.value)


def test_study_must_reference_defined_entries(full):
    full["study"]["recipes"].append("calexnett")
    with pytest.raises(CalexError, match="study.recipes names 'calexnett'"):
        validate_config(full)


def test_defaults_filled_and_recipe_resolution(full):
    config = validate_config(full)
    assert config["recipes"]["calexnet"]["schedule"] == "sequential"
    calex = resolve_recipe(config, "calexnet")
    assert calex["kd_temperature"] == 4.0 and calex["survivor_mode"] == "sampling"
    noalign = resolve_recipe(config, "noalign")
    # keys the objective does not use are dropped, so editing them reruns nothing
    assert "kd_temperature" not in noalign and "survivor_mode" not in noalign
    assert resolve_recipe(config, "pteenet")["cls_epochs"] == 200


def test_config_reference_is_generated_from_the_schema():
    readme = (ROOT / "config" / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme, "config/README.md lost its reference markers"
    table = readme.split(start)[1].split(end)[0]
    assert table == reference_markdown(), "regenerate it: python -m calex_steps.workflow.config"


# ---- exit rules, borrowed branches, splits, latency (docs/calibration.md) ------------------


@pytest.mark.parametrize(
    ("name", "recipe", "expected"),
    [
        ("msp", {"branches_from": "noalign", "exit_signal": "max_softmax", "head": "basic",
                 "thresholds": "global"}, "recipes.msp trains nothing (branches_from: noalign); "
                 "remove ['head']"),
        ("msp", {"branches_from": "nope", "calibration": "full"},
         "recipes.msp.branches_from is 'nope', which is not a recipe that trains"),
        ("msp", {"branches_from": "msp2", "calibration": "full"}, "name one of ["),
        ("half", {"head": "basic", "target": "kd", "calibration": "full"},
         "recipes.half trains branches and needs ['weighting']; or set branches_from"),
        ("msp", {"branches_from": "noalign", "exit_signal": "max_softmax"},
         "recipes.msp has per-class thresholds and needs 'calibration'"),
        ("msp", {"branches_from": "noalign", "thresholds": "global", "calibration": "full"},
         "recipes.msp sweeps one global threshold and calibrates nothing; remove ['calibration']"),
        ("msp", {"branches_from": "noalign", "calibration": "full", "temperature_scaling": True},
         "exit_signal 'branch' does not read"),
        ("msp", {"branches_from": "noalign", "exit_signal": "entropy", "calibration": "full",
                 "calibration_target": "agree", "temperature_scaling": True},
         "calibration_target 'agree' does without"),
        ("msp", {"branches_from": "noalign", "exit_signal": "ztw_ensemble", "calibration": "full"},
         "reads the ensemble files of 'noalign', whose exit_signal is not ztw_ensemble"),
    ],
)  # fmt: skip
def test_exit_rules_and_borrowed_branches_are_checked(full, name, recipe, expected):
    full["recipes"]["msp2"] = {"branches_from": "noalign", "calibration": "full"}
    full["recipes"][name] = recipe
    with pytest.raises(CalexError) as err:
        validate_config(full)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_recalibrating_a_recipe_leaves_its_training_settings_alone(full):
    before = resolve_recipe(validate_config(full), "calexnet")
    full["recipes"]["calexnet"].update(calibration_target="matched")
    full["recipes"]["kd_only"].update(exit_signal="entropy", temperature_scaling=True)
    config = validate_config(full)
    assert resolve_recipe(config, "calexnet") == before
    assert "temperature_scaling" not in resolve_recipe(config, "kd_only")
    assert sweep_settings(config, "calexnet", "cinic10", 0)["calibration_target"] == "matched"


def test_a_recipe_with_borrowed_branches_trains_nothing(full):
    config = validate_config(full)
    msp = config["recipes"]["msp_global"]
    assert msp["schedule"] is None  # matches neither train_branch nor train_joint
    assert branch_recipe(config, "msp_global") == "noalign"
    with pytest.raises(CalexError, match="trains nothing: it sweeps the branches of 'noalign'"):
        resolve_recipe(config, "msp_global")
    settings = sweep_settings(config, "msp_global", "cinic10", 0)
    assert settings["exit_signal"] == "max_softmax" and settings["thresholds"] == "global"
    assert "calibration" not in settings and "calibration_target" not in settings
    assert settings["latency_head"] == "augmented"
    assert sweep_settings(config, "ztw", "cinic10", 0)["latency_head"] == "basic+cascade"
    assert config["sweep"]["dense"] == {"low": 0.001, "high": 0.95, "count": 48}


def test_splits_retrain_only_where_the_training_data_changes(full):
    full["study"]["splits"] = 3
    config = validate_config(full)
    # cifar100_coarse carves its validation part from train: each split is a new dataset.
    assert config["datasets"]["cifar100_coarse-split2"]["split_seed"] == 2
    assert split_source(config, "cifar100_coarse", 2) == "cifar100_coarse-split2"
    assert split_source(config, "cifar100_coarse", 0) == "cifar100_coarse"
    retrained = sweep_settings(config, "calexnet", "cifar100_coarse", 2)
    assert not retrained["redraw"] and retrained["split_seed"] == 2
    # cinic10's validation part is the official valid split: splits re-draw, nothing retrains.
    assert "cinic10-split1" not in config["datasets"]
    assert split_source(config, "cinic10", 1) == "cinic10"
    assert sweep_settings(config, "calexnet", "cinic10", 1)["redraw"]
    full["datasets"]["cifar100_coarse-split1"] = {"source": "synthetic"}
    with pytest.raises(CalexError, match="datasets.cifar100_coarse-split1 is also split 1"):
        validate_config(full)


def test_latency_batch_size_for_the_sweeps(full):
    assert validate_config(full)["latency"]["lr_batch_size"] == 512  # 256 is not measured
    full["latency"]["batch_sizes"] = [1, 32, 256]
    assert validate_config(full)["latency"]["lr_batch_size"] == 256
    full["latency"]["lr_batch_size"] = 64
    with pytest.raises(CalexError, match="latency.lr_batch_size = 64 is not one of"):
        validate_config(full)


def test_only_recipes_with_their_own_branches_are_exported_or_read_for_calibration():
    config = validate_config(merged("workflow_config.yaml", "config/cifar10_resnet56.yaml"))
    assert own_branch_recipes(config, ("branch",)) == [
        "calexnet", "noalign", "align_only", "kd_only", "pteenet", "boostnet"
    ]  # fmt: skip
    with_ztw = own_branch_recipes(config, ("branch", "ztw_ensemble"))
    assert "ztw" in with_ztw and "calexnet_matched" not in with_ztw and "msp_cpm" not in with_ztw


def test_onnx_recipes_must_be_study_recipes(full):
    assert validate_config(full)["deploy"]["onnx_recipes"] == []
    full["deploy"]["onnx_recipes"] = [full["study"]["recipes"][0], "nope"]
    with pytest.raises(CalexError, match=r"deploy.onnx_recipes names \['nope'\]"):
        validate_config(full)


# ---- exits: block names or placement rules, resolved once (docs/exits.md) --------------

SDN_R56 = ["layer1.3", "layer1.7", "layer2.2", "layer2.6", "layer3.1", "layer3.5"]


def test_exits_resolve_to_block_names_per_recipe_and_backbone():
    cfg = merged("workflow_config.yaml", "config/cifar10_resnet56.yaml")
    cfg["backbones"]["resnet56"]["attach_points"] = ["layer3.4", "layer1.8", "layer2"]
    cfg["recipes"]["noalign"]["exits"] = {"placement": "sdn"}
    cfg["recipes"]["calexnet"]["exits"] = {"placement": "pteenet_golden", "count": 4}
    config = validate_config(cfg)
    # names are checked and put in forward order; layer1.8 is layer1's last block
    assert config["backbones"]["resnet56"]["attach_points"] == ["layer1", "layer2", "layer3.4"]
    exits = config["recipe_exits"]
    assert exits["noalign"] == {"resnet56": SDN_R56}
    assert exits["msp_global"] == {"resnet56": SDN_R56}  # branches_from noalign
    assert exits["calexnet"]["resnet56"] == ["layer1.3", "layer1.6", "layer2.1", "layer2.7"]
    assert exits["kd_only"]["resnet56"] == ["layer1", "layer2", "layer3.4"]  # the default
    assert set(exits) == set(cfg["study"]["recipes"])


def test_a_backbone_rule_resolves_on_each_of_its_backbones(full):
    full["backbones"]["resnet50"]["attach_points"] = {"placement": "macs", "fractions": [0.5]}
    full["recipes"]["ztw"]["exits"] = {"placement": "pteenet_linear", "count": 1}
    config = validate_config(full)
    assert config["backbones"]["resnet50"]["attach_points"] == ["layer3.0"]  # 52.2 % of the MACs
    assert config["recipe_exits"]["ztw"] == {"resnet18": ["layer2"], "resnet50": ["layer3.0"]}
    assert config["recipe_exits"]["calexnet"]["resnet18"] == ["layer1", "layer2", "layer3"]


@pytest.mark.parametrize(
    ("where", "spec", "expected"),
    [
        ("backbones", {"placement": "sdnn"}, "attach_points.placement' = 'sdnn'; allowed: ["),
        ("backbones", "sdn", "attach_points' = 'sdn' must be of type array or object"),
        ("backbones", ["layer5"], "names 'layer5', which is not a block of resnet18"),
        ("recipes", {"placement": "macs", "fractions": [0.3, 1.2]}, "exits.fractions.1' = 1.2"),
        ("recipes", {"placement": "macs", "fractions": [0.14, 0.16]},
         "recipes.noalign.exits: placement macs 0.14,0.16 puts fractions 0.14 and 0.16 both at"),
        ("recipes", {"placement": "sdn", "count": 6}, "placement sdn takes no other key"),
    ],
)  # fmt: skip
def test_bad_exit_specifications_are_named(full, where, spec, expected):
    if where == "backbones":
        full["backbones"]["resnet18"]["attach_points"] = spec
    else:
        full["recipes"]["noalign"]["exits"] = spec
    with pytest.raises(CalexError) as err:
        validate_config(full)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_exits_belong_to_the_recipe_that_trains_and_torchvision_lists_them_by_hand(full):
    full["recipes"]["msp"] = {"branches_from": "noalign", "thresholds": "global",
                              "exits": ["layer1"]}  # fmt: skip
    with pytest.raises(CalexError, match=r"trains nothing \(branches_from: noalign\); remove"):
        validate_config(full)
    del full["recipes"]["msp"]
    full["backbones"]["resnet50"] = {"arch": "torchvision:resnet50", "new_head": True,
                                     "attach_points": {"placement": "sdn"}}  # fmt: skip
    with pytest.raises(CalexError) as err:
        validate_config(full)
    msg = str(err.value)
    assert msg.startswith("backbones.resnet50.attach_points: a placement rule needs MACs")
    assert "--list-attach-points torchvision:resnet50 --placement sdn" in msg
