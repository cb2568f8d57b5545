"""The bad-input catalogue (docs/bad-input.md): each case stops with one clear line
naming the file or key and the fix, and leaves earlier valid results untouched.

Cases covered elsewhere: malformed configuration (test_config.py,
test_workflow.py::test_misspelt_key_stops_with_one_line), missing dataset
(test_workflow.py::test_missing_dataset_stops_before_any_job,
test_prepare_dataset.py), NaN loss in branch training (test_train_branch.py).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TINY_BACKBONE, TINY_PRETRAIN, write_synthetic_prepared

from calex_steps.data.sources import check_source
from calex_steps.errors import CalexError
from calex_steps.models.checkpoints import tensor_sha256
from calex_steps.stages import sweep_margins, train_branch
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.stages.pretrain_backbone import run_pretrain_backbone
from calex_steps.stages.probe_coarse import run_probe_coarse

BACKBONE = TINY_BACKBONE
PRETRAIN = TINY_PRETRAIN
PROBE = {
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "seed": 0,
}
RECIPE = {
    "head": "augmented",
    "target": "kd",
    "kd_temperature": 4.0,
    "weighting": "survivor",
    "survivor_mode": "sampling",
    "prototypes": 16,
    "cls_epochs": 2,
    "conf_epochs": 2,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 128,
}
SWEEP = json.dumps({"margins": [0.05, 0.2], "calibration": "cascade"})


def train(run, features, backbone, recipe="calexnet", seed=0, branches=(1, 2, 3)):
    """Train the requested branches of one recipe through the stage's CLI."""
    for b in branches:
        prev = [str(run / f"branch{k}.npz") for k in range(1, b)]
        argv = [
            "--features",
            str(features),
            "--branch",
            str(b),
            "--prev",
            *prev,
            "--backbone",
            str(backbone),
            "--recipe",
            recipe,
            "--settings",
            json.dumps(RECIPE),
            "--seed",
            str(seed),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out-head",
            str(run / f"branch{b}.pt"),
            "--out-outputs",
            str(run / f"branch{b}.npz"),
        ]
        assert train_branch.main(argv) == 0
    return [run / f"branch{b}.npz" for b in branches]


def sweep_argv(features, branches, out):
    return [
        "--features",
        str(features),
        "--branches",
        *map(str, branches),
        "--settings",
        SWEEP,
        "--out-table",
        str(out / "sweep.csv"),
        "--out-thresholds",
        str(out / "thr.npz"),
        "--out-exits",
        str(out / "exits.npz"),
        "--out-per-class",
        str(out / "pc.csv"),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A real tiny pipeline: prepared data, backbone, feature cache, three branches."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stack")
    prepared = write_synthetic_prepared(root / "prepared.h5")
    backbone = root / "backbone.pt"
    run_pretrain_backbone(prepared, BACKBONE, PRETRAIN, "cpu", backbone)
    probe = root / "probe.pt"
    run_probe_coarse(prepared, backbone, PROBE, "cpu", probe)
    features = root / "features.h5"
    run_cache_features(
        prepared,
        backbone,
        probe,
        ["layer1", "layer2", "layer3"],
        {"batch_size": 128},
        "cpu",
        features,
    )
    run = root / "calexnet"
    branches = train(run, features, backbone)
    return {
        "root": root,
        "prepared": prepared,
        "backbone": backbone,
        "features": features,
        "run": run,
        "branches": branches,
    }


def one_error_line(capsys) -> str:
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1
    return lines[0]


def test_partial_dataset_names_the_missing_file(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch", "batches.meta"):
        (root / name).write_bytes(b"x")
    message = check_source({"source": "cifar10", "root": str(root)})
    assert message is not None and "data_batch_3" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_feature_cache(stack, tmp_path, capsys, damage):
    broken = tmp_path / "features.h5"
    data = stack["features"].read_bytes()
    broken.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\0" * 4096)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.csv").write_text("earlier result\n")
    assert sweep_margins.main(sweep_argv(broken, stack["branches"], out)) == 1
    line = one_error_line(capsys)
    assert str(broken) in line and "cache_features" in line
    assert (out / "sweep.csv").read_text() == "earlier result\n"


def test_cache_from_another_backbone(stack, tmp_path, capsys):
    other = tmp_path / "other_backbone.pt"
    ckpt = torch.load(stack["backbone"], weights_only=True)
    ckpt["state_dict"]["fc.bias"] += 1.0
    ckpt["tensor_sha256"] = tensor_sha256(ckpt["state_dict"])  # a valid, different backbone
    torch.save(ckpt, other)
    run = tmp_path / "run"
    argv = [
        "--features",
        str(stack["features"]),
        "--branch",
        "1",
        "--backbone",
        str(other),
        "--recipe",
        "calexnet",
        "--settings",
        json.dumps(RECIPE),
        "--seed",
        "0",
        "--out-head",
        str(run / "branch1.pt"),
        "--out-outputs",
        str(run / "branch1.npz"),
    ]
    assert train_branch.main(argv) == 1
    line = one_error_line(capsys)
    assert "another backbone checkpoint" in line and "cache_features" in line
    assert not run.exists() or not any(run.iterdir())


def test_branch_output_from_another_seed(stack, tmp_path, capsys):
    foreign = train(tmp_path / "seed1", stack["features"], stack["backbone"], seed=1, branches=(1,))
    mixed = [foreign[0], *stack["branches"][1:]]
    assert sweep_margins.main(sweep_argv(stack["features"], mixed, tmp_path)) == 1
    line = one_error_line(capsys)
    assert "seed" in line and ".npz" in line and "one recipe and seed" in line
    assert not (tmp_path / "sweep.csv").exists()


def test_nan_loss_in_pretraining_names_the_setting(stack, tmp_path):
    settings = dict(PRETRAIN, lr=1e30, epochs=2)
    with pytest.raises(CalexError, match="lower the learning rate"):
        run_pretrain_backbone(stack["prepared"], BACKBONE, settings, "cpu", tmp_path / "b.pt")
    assert not (tmp_path / "b.pt").exists()


def test_same_seed_gives_byte_identical_sweep_tables(stack, tmp_path):
    again = train(tmp_path / "again", stack["features"], stack["backbone"])
    for name, branches in (("first", stack["branches"]), ("second", again)):
        (tmp_path / name).mkdir()
        assert sweep_margins.main(sweep_argv(stack["features"], branches, tmp_path / name)) == 0
    for table in ("sweep.csv", "pc.csv"):
        assert (tmp_path / "first" / table).read_bytes() == (
            tmp_path / "second" / table
        ).read_bytes()
    shutil.rmtree(tmp_path / "again")
