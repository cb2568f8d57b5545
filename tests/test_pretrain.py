"""Pretraining reads its images one shuffling window at a time, and crops at any resolution."""

from __future__ import annotations

import h5py
import numpy as np
import torch
from test_image_folder import write_folder

from calex_steps.data import prepared
from calex_steps.stages.prepare_dataset import run_prepare_dataset
from calex_steps.stages.pretrain_backbone import run_pretrain_backbone
from calex_steps.training.augment import random_resized_crop_flip
from calex_steps.training.pretrain import epoch_windows


def test_windows_visit_every_row_once_and_stay_within_the_buffer():
    gen = torch.Generator().manual_seed(0)
    windows = list(epoch_windows(1000, chunk_rows=37, window_rows=200, gen=gen))
    rows = np.concatenate([r for r, _ in windows])
    assert sorted(rows.tolist()) == list(range(1000))
    assert max(len(r) for r, _ in windows) <= 200 and len(windows) > 4
    for r, order in windows:
        assert sorted(order.tolist()) == list(range(len(r)))
    # a split that fits the buffer is one plain permutation, as before streaming existed
    ((rows, order),) = epoch_windows(50, 37, 200, torch.Generator().manual_seed(1))
    assert (order == torch.randperm(50, generator=torch.Generator().manual_seed(1))).all()


def test_random_resized_crop_zooms_into_a_part_and_flips_some_samples():
    ramp = torch.linspace(0, 1, 40).expand(64, 3, 40, 40).clone()  # value = column position
    out = random_resized_crop_flip(ramp, (0.2, 0.5), False, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape
    steps = out[:, 0, 20].diff(dim=1)  # N×39 along one row
    assert (steps >= -1e-6).all()  # no flip: still increasing left to right
    spans = out[:, 0, 20, -1] - out[:, 0, 20, 0]
    assert (spans < 0.9).all() and (spans > 0.3).all()  # a crop of 45% to 71% of the width
    flipped = random_resized_crop_flip(ramp, (0.2, 0.5), True, torch.Generator().manual_seed(0))
    decreasing = (flipped[:, 0, 20, -1] < flipped[:, 0, 20, 0]).float().mean()
    assert 0.25 < decreasing < 0.75


def test_pretraining_on_a_96_pixel_folder_streams_through_small_windows(tmp_path, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(prepared, "CHUNK_BYTES", 20_000)  # two 48×48 images per chunk
    root = write_folder(tmp_path / "imgs", {"train": 12, "val": 3, "test": 3}, sizes=(96,))
    data = tmp_path / "prepared.h5"
    run_prepare_dataset("mine", {"source": "image_folder", "root": str(root), "image_size": 48,
                                 "folders": {"val": "val"}}, data)  # fmt: skip
    backbone = {"arch": "torchvision:resnet18", "width": 0.125,
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
    settings = {"epochs": 3, "batch_size": 8, "lr": 0.05, "momentum": 0.9, "weight_decay": 0,
                "crop_padding": 4, "hflip": True, "seed": 0, "crop": "resized",
                "crop_scale": [0.35, 1.0], "shuffle_buffer_mb": 0.05}  # fmt: skip
    with h5py.File(data) as f:
        assert f["train/images"].chunks[0] == 2  # 0.05 MB windows: 7 of the 36 images
    ckpt = run_pretrain_backbone(data, backbone, settings, "cpu", tmp_path / "bb.pt")
    assert ckpt["input_size"] == 48 and 0 <= ckpt["val_acc"] <= 1
    again = run_pretrain_backbone(data, backbone, settings, "cpu", tmp_path / "bb2.pt")
    for key, value in ckpt["state_dict"].items():  # seeded: the same windows, crops, weights
        assert torch.equal(value, again["state_dict"][key]), key
