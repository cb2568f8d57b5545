"""Stage pretrain_backbone: it learns, records its metadata, and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_BACKBONE, TINY_PRETRAIN, write_synthetic_prepared

from calex_steps.stages.pretrain_backbone import run_pretrain_backbone
from calex_steps.training.augment import random_crop_flip
from calex_steps.training.scratch import scratch_path

BACKBONE = TINY_BACKBONE
SETTINGS = dict(TINY_PRETRAIN, epochs=3, seed=3)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_synthetic_prepared(tmp_path_factory.mktemp("data") / "prepared.h5")


def test_checkpoint_metadata_and_learning(prepared, tmp_path):
    out = tmp_path / "backbone.pt"
    run_pretrain_backbone(prepared, BACKBONE, SETTINGS, "cpu", out)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["arch"] == "resnet18" and ckpt["width"] == 0.125 and ckpt["num_classes"] == 8
    assert ckpt["normalization"] == BACKBONE["normalization"]
    assert ckpt["val_acc"] > 1.5 / 8  # clearly above chance on 8 fine classes after 3 epochs
    assert 0 <= ckpt["test_acc"] <= 1
    assert not scratch_path(out).exists()


def test_interrupted_run_resumes_to_the_same_weights(prepared, tmp_path):
    straight = tmp_path / "straight.pt"
    run_pretrain_backbone(prepared, BACKBONE, SETTINGS, "cpu", straight)

    resumed = tmp_path / "resumed.pt"

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_pretrain_backbone(prepared, BACKBONE, SETTINGS, "cpu", resumed, stop_after_two)
    assert scratch_path(resumed).exists() and not resumed.exists()
    run_pretrain_backbone(prepared, BACKBONE, SETTINGS, "cpu", resumed)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_crop_flip_keeps_content_and_is_seeded():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, 1, True, gen)
    assert y.shape == x.shape
    # every output pixel is either zero padding or a pixel of the same image
    for i in range(2):
        assert set(y[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0.0}
    again = random_crop_flip(x, 1, True, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    assert torch.equal(random_crop_flip(x, 0, False, gen), x)
