"""Stage import_backbone: a user's trained network enters the pipeline without pretraining."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import SHARED_DATA, cifar10_jpeg_subset, write_prepared_arrays
from PIL import Image

from calex_steps.models.backbones import HE_MEAN, HE_STD
from calex_steps.stages.import_backbone import main, run_import_backbone
from calex_steps.stages.prepare_dataset import run_prepare_dataset

WEIGHTS = SHARED_DATA / "cifar10_resnet_weights"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not WEIGHTS.is_dir(), reason=f"real weights not found at {WEIGHTS}"),
]
RESNET20 = {
    "arch": "resnet20",
    "width": 1.0,
    "normalization": {"mean": list(HE_MEAN), "std": list(HE_STD)},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    images, labels, classes = cifar10_jpeg_subset(per_class=30)
    half = len(labels) // 2
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    val, test = order[:half], order[half:]
    splits = {
        "train": (images[:10], labels[:10]),
        "val": (images[val], labels[val]),
        "test": (images[test], labels[test]),
    }
    return write_prepared_arrays(tmp_path_factory.mktemp("c10") / "prepared.h5", splits, classes)


def test_shared_resnet20_imports_with_its_accuracy(prepared, tmp_path):
    torch.set_num_threads(1)
    weights = next(WEIGHTS.glob("resnet20-*.th"))
    ckpt = run_import_backbone(prepared, RESNET20, weights, "cpu", tmp_path / "backbone.pt")
    # 300 real JPEG CIFAR-10 test images; on all 10,000 this network scores 81.0%
    assert 0.70 < ckpt["official_test_acc"] < 0.92
    saved = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert saved["arch"] == "resnet20" and saved["num_classes"] == 10
    assert saved["normalization"]["mean"] == list(HE_MEAN)


def test_checkpoint_of_another_architecture_is_one_line(prepared, tmp_path, capsys):
    weights = next(WEIGHTS.glob("resnet32-*.th"))
    argv = [
        "--data",
        str(prepared),
        "--backbone",
        json.dumps(RESNET20),
        "--checkpoint",
        str(weights),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "backbone.pt"),
    ]
    assert main(argv) == 1
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1 and "layer1.3" in lines[0] and str(weights) in lines[0]
    assert not (tmp_path / "backbone.pt").exists()


@pytest.fixture(scope="module")
def cinic_like_folder(tmp_path_factory):
    """Real 32×32 CIFAR-10 test images as PNG files in the CINIC-10 layout
    (train/valid/test/<class>/), 10 per class and split."""
    root = tmp_path_factory.mktemp("cinic_like")
    images, labels, classes = cifar10_jpeg_subset(per_class=30)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / ("train", "valid", "test")[i % 3] / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return {"source": "image_folder", "root": str(root),
            "folders": {"train": "train", "val": "valid", "test": "test"}}  # fmt: skip


def test_a_32px_folder_keeps_its_size_and_a_wrong_size_stops_the_import(
    cinic_like_folder, tmp_path, capsys
):
    """Without image_size the folder is prepared at its own 32×32 and ResNet-20 scores as
    on CIFAR-10; prepared at 64×64 it scores near chance (15% here), and the import stops
    with one line naming the size and normalization in force."""
    torch.set_num_threads(1)
    weights = next(WEIGHTS.glob("resnet20-*.th"))
    own = tmp_path / "own.h5"
    run_prepare_dataset("mine", cinic_like_folder, own)
    ckpt = run_import_backbone(own, RESNET20, weights, "cpu", tmp_path / "own.pt")
    assert ckpt["input_size"] == 32 and ckpt["val_acc"] > 0.7

    big = tmp_path / "big.h5"
    run_prepare_dataset("mine", dict(cinic_like_folder, image_size=64), big)
    argv = ["--data", str(big), "--backbone", json.dumps(RESNET20), "--checkpoint",
            str(weights), "--device", "cpu", "--out", str(tmp_path / "big.pt")]  # fmt: skip
    assert main(argv) == 1
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1 and "near chance (10 classes: at most 20.0%)" in lines[0]
    assert "prepared at 64×64" in lines[0] and f"mean {list(HE_MEAN)}" in lines[0]
    assert "accept_near_chance: true" in lines[0] and not (tmp_path / "big.pt").exists()
