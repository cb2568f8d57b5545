"""Torchvision backbones: attach points listed by name, narrowed ResNets, MACs at any input size,
and a user's folder at 64 and 224 pixels through prepare → import → (probe) → cache."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torchvision
import yaml
from conftest import ROOT, copy_workflow, snakemake, write_tiny
from test_image_folder import write_folder

from calex_steps.errors import CalexError
from calex_steps.models.attach_points import candidate_names, describe_attach_points
from calex_steps.models.backbones import build_backbone
from calex_steps.models.flops import stage_macs
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.stages.import_backbone import run_import_backbone
from calex_steps.stages.prepare_dataset import run_prepare_dataset
from calex_steps.stages.probe_coarse import run_probe_coarse
from calex_steps.workflow.config import IMAGENET_NORMALIZATION, needs_probe, validate_config

ARCHS = ("resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")
PROBE = {"epochs": 3, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0, "seed": 0}


@pytest.mark.parametrize("name", ARCHS)
def test_every_named_family_lists_attach_points_that_run(name):
    rows = describe_attach_points(f"torchvision:{name}", input_size=64)
    names = [r[0] for r in rows[:-1]]
    assert len(names) >= 4 and rows[-1][0] == "total"
    macs = [r[2] for r in rows]
    assert macs == sorted(macs) and macs[0] > 0  # cumulative, in forward order
    assert all(len(r[1]) == 3 for r in rows[:-1])  # C×H×W maps


def test_resnet50_at_224_costs_its_published_4_1_gmacs_and_lists_its_stages():
    rows = dict((r[0], r) for r in describe_attach_points("torchvision:resnet50"))
    assert rows["layer3"][1] == (1024, 14, 14) and rows["layer4"][1] == (2048, 7, 7)
    assert 4.0e9 < rows["total"][2] < 4.2e9
    # the cost scales with the input area: 64×64 is (64/224)² of it, give or take the fc
    small = stage_macs("torchvision:resnet50", attach_points=["layer3"], input_size=64)
    assert abs(small["layer3"] / rows["layer3"][2] - (64 / 224) ** 2) < 0.01


def test_cli_prints_the_attach_points_and_rejects_an_unknown_model():
    ok = subprocess.run(
        [sys.executable, "-m", "calex_steps.backbones", "--list-attach-points",
         "torchvision:resnet18", "--input-size", "64"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0
    assert "layer2.0 " in ok.stdout and "128×8×8" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "calex_steps.backbones", "--list-attach-points",
         "torchvision:nonet"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_a_narrow_torchvision_resnet_keeps_its_class_and_module_names():
    model = build_backbone("torchvision:resnet18", width=0.25, num_classes=7)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.layer1[0].conv1.out_channels == 16 and model.fc.in_features == 128
    assert candidate_names(model)[:2] == ["layer1.0", "layer1"]
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(CalexError, match="width"):
        build_backbone("torchvision:mobilenet_v3_large", width=0.5)


def _checkpoint(tmp_path, arch, width, classes):
    """A randomly initialised torchvision model saved as a user's state dict (no download)."""
    torch.manual_seed(0)
    path = tmp_path / f"{arch.split(':')[1]}-{classes}.pth"
    torch.save(build_backbone(arch, width, classes).state_dict(), path)
    return path


def _backbone(arch, width, **extra):
    """A random checkpoint scores near chance: the check that stops such a run is waived."""
    return {"arch": arch, "width": width, "normalization": IMAGENET_NORMALIZATION,
            "accept_near_chance": True, **extra}  # fmt: skip


def test_folder_at_64_runs_prepare_import_and_cache_on_resnet18(tmp_path):
    torch.set_num_threads(2)
    root = write_folder(tmp_path / "imgs", {"train": 4, "val": 3, "test": 3}, sizes=(64, 96))
    data = tmp_path / "prepared.h5"
    run_prepare_dataset("mine", {"source": "image_folder", "root": str(root), "image_size": 64,
                                 "folders": {"val": "val"}}, data)  # fmt: skip
    arch = "torchvision:resnet18"
    weights = _checkpoint(tmp_path, arch, 0.25, 3)
    ckpt = run_import_backbone(data, _backbone(arch, 0.25), weights, "cpu", tmp_path / "bb.pt")
    assert ckpt["input_size"] == 64 and 0 <= ckpt["test_acc"] <= 1
    attach = ["layer1", "layer2", "layer3"]
    attrs = run_cache_features(data, tmp_path / "bb.pt", None, attach, {"batch_size": 8}, "cpu",
                               tmp_path / "features.h5")  # fmt: skip
    assert attrs["arch"] == arch
    with h5py.File(tmp_path / "features.h5") as f:
        assert f["train/feat1"].attrs["h"] == 16 and f["train/feat3"].attrs["h"] == 4
        assert f["test/logits"].shape == (9, 3)
        assert np.isfinite(f["val/feat2"][()]).all()


def test_imagenet_head_gets_a_probe_and_a_224_folder_reaches_the_cache(tmp_path):
    """A 1000-class checkpoint on a 3-class folder at 224×224: new_head fits the probe."""
    torch.set_num_threads(2)
    root = write_folder(tmp_path / "imgs", {"train": 3, "test": 3}, sizes=(224, 256))
    data = tmp_path / "prepared.h5"
    run_prepare_dataset("big", {"source": "image_folder", "root": str(root), "image_size": 224,
                                "val_from": "test", "val_size": 3}, data)  # fmt: skip
    arch = "torchvision:resnet50"
    weights = _checkpoint(tmp_path, arch, 0.125, 1000)
    with pytest.raises(CalexError, match="new_head: true"):
        run_import_backbone(data, _backbone(arch, 0.125), weights, "cpu", tmp_path / "bb.pt")
    assert not (tmp_path / "bb.pt").exists()
    backbone = _backbone(arch, 0.125, new_head=True, checkpoint=str(weights))
    ckpt = run_import_backbone(data, backbone, weights, "cpu", tmp_path / "bb.pt")
    assert ckpt["num_classes"] == 1000 and ckpt["input_size"] == 224
    probe = run_probe_coarse(data, tmp_path / "bb.pt", PROBE, "cpu", tmp_path / "probe.pt")
    assert probe["num_classes"] == 3 and probe["in_features"] == 256
    run_cache_features(data, tmp_path / "bb.pt", tmp_path / "probe.pt", ["layer2", "layer3"],
                       {"batch_size": 4}, "cpu", tmp_path / "features.h5")  # fmt: skip
    with h5py.File(tmp_path / "features.h5") as f:
        assert f["test/logits"].shape == (6, 3)
        assert f["train/feat1"].attrs["h"] == 28  # layer2 of a 224 input: 28×28


def test_torchvision_normalization_defaults_and_new_head_selects_the_probe():
    cfg = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    cfg["backbones"] = {"tv": {"arch": "torchvision:resnet50", "checkpoint": "w.pth",
                               "new_head": True}}  # fmt: skip
    cfg["study"]["backbones"] = ["tv"]
    full = validate_config(cfg)
    assert full["backbones"]["tv"]["normalization"] == IMAGENET_NORMALIZATION
    assert needs_probe({"source": "image_folder"}, full["backbones"]["tv"])
    assert not needs_probe({"source": "image_folder"}, {**full["backbones"]["tv"], "new_head": 0})
    cfg["backbones"] = {"tv": {"arch": "resnet18"}}
    with pytest.raises(CalexError, match="backbones.tv.normalization is missing"):
        validate_config(cfg)


@pytest.mark.slow
def test_user_folder_at_224_with_a_resnet50_file_plans_and_runs_the_first_stages(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_folder(work / "data" / "mine", {"train": 2, "test": 2}, sizes=(224, 300))
    weights = _checkpoint(work / "data", "torchvision:resnet50", 0.125, 1000)
    write_tiny(
        work,
        {
            "study.datasets": ["mine"],
            "study.backbones": ["tv50"],
            "datasets.mine": {"source": "image_folder", "root": "data/mine", "image_size": 224,
                              "val_from": "test", "val_size": 3},
            "backbones.tv50": {"arch": "torchvision:resnet50", "width": 0.125,
                               "checkpoint": str(weights), "new_head": True,
                               "accept_near_chance": True,
                               "attach_points": ["layer1", "layer2", "layer3"]},
        },
    )  # fmt: skip
    plan = snakemake(work, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "import_backbone" in plan.stdout and "probe_coarse" in plan.stdout
    assert "pretrain_backbone" not in plan.stdout
    done = snakemake(work, "results/mine/tv50/features.h5")
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(work / "results/mine/tv50/features.h5") as f:
        assert f["test/logits"].shape == (3, 3) and f["train/feat1"].attrs["h"] == 56
