"""A reduced version of config/cifar10_resnet56.yaml: real JPEG CIFAR-10 pixels, the shared
pretrained ResNet-56 as the frozen backbone, attach points inside stage 3, validation
carved from the official test split. Skipped when ../shared/data is absent."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_workflow, snakemake
from helpers import SHARED_DATA, cifar10_jpeg_subset

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED_DATA / "cifar10_jpeg.npz").is_file(),
        reason=f"real CIFAR-10 pixels not found under {SHARED_DATA}",
    ),
]


def write_cifar10_batches(root, train, test, classes):
    """The official cifar-10-batches-py layout (five train batches), from real images."""
    root.mkdir(parents=True)

    def rows(images):  # N×32×32×3 -> N×3072 planar (R, G, B), as in the archive
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1)

    for k, part in enumerate(np.array_split(np.arange(len(train[1])), 5), start=1):
        batch = {b"data": rows(train[0][part]), b"labels": train[1][part].tolist()}
        (root / f"data_batch_{k}").write_bytes(pickle.dumps(batch))
    (root / "test_batch").write_bytes(
        pickle.dumps({b"data": rows(test[0]), b"labels": test[1].tolist()})
    )
    (root / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in classes]})
    )


def test_reduced_real_benchmark(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    train = cifar10_jpeg_subset(per_class=30, split="train")
    test = cifar10_jpeg_subset(per_class=40, split="test")
    write_cifar10_batches(
        workdir / "data" / "c10" / "cifar-10-batches-py", train[:2], test[:2], test[2]
    )
    real = yaml.safe_load((workdir / "config" / "cifar10_resnet56.yaml").read_text())
    real["device"] = "cpu"
    real["study"].update(recipes=["calexnet", "pteenet"], seeds=[0])
    real["datasets"]["cifar10_jpeg"].update(root="data/c10/cifar-10-batches-py", val_size=200)
    real["backbones"]["resnet56"]["checkpoint"] = str(
        next((SHARED_DATA / "cifar10_resnet_weights").glob("resnet56-*.th"))
    )
    real["training"] = {"cls_epochs": 3, "conf_epochs": 3, "batch_size": 128}
    real["recipes"] = {"pteenet": {"cls_epochs": 3, "conf_epochs": 3}}
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(real))
    result = snakemake(workdir, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]

    run = workdir / "results" / "cifar10_jpeg" / "resnet56"
    ckpt = torch.load(run / "backbone.pt", weights_only=True)
    # 400 real test images; on all 10,000 the shared ResNet-56 scores 83.2%
    assert 0.74 < ckpt["official_test_acc"] < 0.92
    log = (workdir / "logs" / "import_backbone" / "cifar10_jpeg" / "resnet56.log").read_text()
    assert "whole official test split" in log
    for recipe in ("calexnet", "pteenet"):
        table = pd.read_csv(run / recipe / "seed0" / "split0" / "sweep.csv")
        assert len(table) == 8 and (table["backbone_accuracy"] > 0.74).all()
