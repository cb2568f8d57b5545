"""Stage probe_coarse: a coarse-label linear probe on a frozen fine-label backbone."""

from __future__ import annotations

import json

import h5py
import numpy as np
import torch
from helpers import TINY_BACKBONE, TINY_PRETRAIN, write_synthetic_prepared

from calex_steps.data.files import sha256_file
from calex_steps.models.backbones import build_backbone
from calex_steps.models.checkpoints import load_classifier, load_frozen_backbone
from calex_steps.stages.import_backbone import run_import_backbone
from calex_steps.stages.pretrain_backbone import run_pretrain_backbone
from calex_steps.stages.probe_coarse import main, run_probe_coarse

PROBE = {"epochs": 8, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


def test_probe_learns_the_coarse_task_and_records_its_backbone(tmp_path):
    data = write_synthetic_prepared(tmp_path / "prepared.h5", n_train=400, num_coarse=4)
    backbone = tmp_path / "backbone.pt"
    run_pretrain_backbone(data, TINY_BACKBONE, TINY_PRETRAIN | {"epochs": 2}, "cpu", backbone)
    out = tmp_path / "probe.pt"
    ckpt = run_probe_coarse(data, backbone, PROBE | {"seed": 0}, "cpu", out)
    # 4 coarse classes: chance is 0.25; features of a 2-epoch fine-label backbone do better
    assert ckpt["num_classes"] == 4 and ckpt["val_acc"] > 0.35
    assert ckpt["backbone_sha256"] == sha256_file(backbone)
    model, _ = load_frozen_backbone(backbone, "cpu")
    layer = load_classifier(model, out, "cpu")
    assert layer.out_features == 4 and not any(p.requires_grad for p in layer.parameters())
    with torch.no_grad():
        assert layer(torch.zeros(2, ckpt["in_features"])).shape == (2, 4)


def test_bad_settings_json_is_one_line(tmp_path, capsys):
    args = ["--data", "x.h5", "--backbone", "b.pt", "--settings", "{oops", "--out", "p.pt"]
    assert main(args) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("calex error:")]
    assert len(errors) == 1 and "--settings is not valid JSON" in errors[0]
    assert "Traceback" not in err


def test_probe_of_an_imported_checkpoint_near_chance_stops_the_run(tmp_path, capsys):
    """A checkpoint with its own head (new_head) whose probe cannot beat chance (labels
    that images do not predict) stops with one line, unless accept_near_chance is set."""
    torch.set_num_threads(1)
    data = write_synthetic_prepared(tmp_path / "prepared.h5", n_train=200, num_coarse=4)
    with h5py.File(data, "a") as f:  # task labels drawn independently of the images
        rng = np.random.default_rng(0)
        for split in ("train", "val", "test"):
            f[split]["labels"][...] = rng.integers(0, 4, len(f[split]["labels"]))
    weights = tmp_path / "weights.th"
    torch.save(build_backbone("resnet20", 1.0, 10).state_dict(), weights)
    entry = {"arch": "resnet20", "width": 1.0, "new_head": True,
             "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
    run_import_backbone(data, entry, weights, "cpu", tmp_path / "backbone.pt")
    settings = PROBE | {"seed": 0}
    argv = ["--data", str(data), "--backbone", str(tmp_path / "backbone.pt"),
            "--settings", json.dumps(settings), "--device", "cpu",
            "--out", str(tmp_path / "probe.pt")]  # fmt: skip
    assert main(argv) == 1
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1 and f"the linear probe on the checkpoint {weights} scores" in lines[0]
    assert "near chance (4 classes: at most 50.0%)" in lines[0] and "32×32" in lines[0]
    assert "mean [0.5, 0.5, 0.5] std [0.25, 0.25, 0.25]" in lines[0]
    assert not (tmp_path / "probe.pt").exists()
    accepted = dict(entry, accept_near_chance=True)
    run_import_backbone(data, accepted, weights, "cpu", tmp_path / "backbone.pt")
    probe = run_probe_coarse(data, tmp_path / "backbone.pt", settings, "cpu",
                             tmp_path / "probe.pt")  # fmt: skip
    assert probe["val_acc"] <= 0.5
