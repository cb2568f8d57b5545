"""The configuration schema: shipped configs pass, mistakes stop with one line."""

import copy
from pathlib import Path

import pytest
import yaml

from calex_steps.errors import CalexError
from calex_steps.workflow.config import reference_markdown, resolve_recipe, validate_config

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
            "allowed: ['argmax_ce', 'kd', 'pteenet', 'boostnet']",
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


def test_readme_config_reference_is_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme, "README lost its configuration reference markers"
    table = readme.split(start)[1].split(end)[0]
    assert table == reference_markdown(), "regenerate it: python -m calex_steps.workflow.config"
