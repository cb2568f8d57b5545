"""Stage probe_coarse: a coarse-label linear probe on a frozen fine-label backbone."""

from __future__ import annotations

import torch
from helpers import TINY_BACKBONE, TINY_PRETRAIN, write_synthetic_prepared

from calex_steps.data.files import sha256_file
from calex_steps.models.checkpoints import load_classifier, load_frozen_backbone
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
