"""Stage cache_features: what it stores equals what the backbone computes, batch by batch."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from helpers import write_synthetic_prepared

from calex_steps.data.feature_cache import use_gram
from calex_steps.flops import stage_macs
from calex_steps.models.backbones import build_backbone
from calex_steps.models.gram import unpack_gram
from calex_steps.models.inference import preprocess, run_with_taps
from calex_steps.stages.cache_features import run_cache_features

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}
# at width 0.125 layers 1-3 all store the Gram form; layer4 (64×4×4) stores the map
ATTACH = ["layer1", "layer3", "layer4"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cache")
    prepared = write_synthetic_prepared(
        root / "prepared.h5", n_train=70, n_val=30, n_test=30, num_coarse=4, fine_per_coarse=1
    )
    torch.manual_seed(0)
    model = build_backbone("resnet18", 0.125, num_classes=4)
    ckpt = {
        "arch": "resnet18",
        "width": 0.125,
        "num_classes": 4,
        "normalization": NORM,
        "state_dict": model.state_dict(),
    }
    torch.save(ckpt, root / "backbone.pt")
    out = root / "features.h5"
    # a batch size that does not divide the split sizes: streaming must stitch batches right
    run_cache_features(prepared, root / "backbone.pt", None, ATTACH, {"batch_size": 16}, "cpu", out)
    return prepared, model.eval(), out


def test_gram_or_map_whichever_is_smaller():
    assert use_gram(64, 32, 32) and use_gram(128, 16, 16) and not use_gram(256, 8, 8)


def test_cache_equals_direct_computation(cached):
    prepared, model, out = cached
    with h5py.File(prepared) as src:
        images = torch.from_numpy(src["test"]["images"][()])
        labels = src["test"]["labels"][()]
    with torch.no_grad():
        feats, _, logits = run_with_taps(model, preprocess(images, **NORM), ATTACH)
    with h5py.File(out) as f:
        test = f["test"]
        np.testing.assert_array_equal(test["labels"][()], labels)
        np.testing.assert_allclose(test["logits"][()], logits.numpy(), rtol=1e-4, atol=1e-5)
        g1 = test["feat1"]
        assert g1.attrs["kind"] == "gram" and (g1.attrs["d"], g1.attrs["h"]) == (8, 32)
        x = feats["layer1"].flatten(2)
        direct = x @ x.transpose(1, 2) / x.shape[2]
        stored = unpack_gram(torch.from_numpy(g1[()]), 8)
        torch.testing.assert_close(stored, direct, rtol=1e-4, atol=1e-5)
        assert test["feat3"].attrs["kind"] == "map"
        torch.testing.assert_close(
            torch.from_numpy(test["feat3"][()]), feats["layer4"], rtol=1e-4, atol=1e-5
        )


def test_provenance_attributes(cached):
    _, _, out = cached
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
        assert json.loads(attrs["attach_points"]) == ATTACH
        assert json.loads(attrs["stage_macs"]) == stage_macs("resnet18", 0.125, 4, ATTACH)
        assert len(attrs["backbone_sha256"]) == 64 and attrs["features_id"]
        assert set(f) == {"train", "val", "test"} and len(f["train"]["labels"]) == 70
