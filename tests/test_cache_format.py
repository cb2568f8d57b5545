"""The compact feature cache (``cache.compact``) and the disk check before writing."""

from __future__ import annotations

import shutil
from collections import namedtuple

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import MARGINS, RECIPE, write_synthetic_prepared

from calex_steps.data import cache_format
from calex_steps.data.feature_cache import load_branch_inputs
from calex_steps.errors import CalexError
from calex_steps.models.backbones import build_backbone
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.stages.sweep_margins import run_sweep_margins
from calex_steps.stages.train_branch import run_train_branch

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A prepared file and a random width-0.125 ResNet18 checkpoint (layer4 stores the map)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compact")
    prepared = write_synthetic_prepared(
        root / "prepared.h5", n_train=60, n_val=20, n_test=20, num_coarse=4, fine_per_coarse=1
    )
    torch.manual_seed(0)
    model = build_backbone("resnet18", 0.125, num_classes=4)
    ckpt = {"arch": "resnet18", "width": 0.125, "num_classes": 4, "normalization": NORM}
    torch.save({**ckpt, "state_dict": model.state_dict()}, root / "backbone.pt")
    return root, prepared


def write_cache(root, prepared, compact, name, attach=("layer1", "layer4")):
    out = root / name
    settings = {"batch_size": 16, "compact": compact}
    run_cache_features(prepared, root / "backbone.pt", None, list(attach), settings, "cpu", out)
    return out


@pytest.mark.parametrize("compact", ["float16", "lzf", "float16_lzf"])
def test_compact_cache_reads_back_as_float32(small_run, compact):
    root, prepared = small_run
    ref = write_cache(root, prepared, "none", "ref.h5")
    out = write_cache(root, prepared, compact, f"{compact}.h5")
    with h5py.File(out) as f:
        assert f.attrs["compact"] == compact
        with h5py.File(ref) as g:  # branch files trained on one cannot pass for the other
            assert f.attrs["features_id"] != g.attrs["features_id"]
        ds = f["train"]["feat2"]
        assert ds.dtype == (np.float16 if compact.startswith("float16") else np.float32)
        assert (ds.compression == "lzf") == compact.endswith("lzf")
        assert f["train"]["logits"].dtype == np.float32  # predictions stay exact
    for branch in (1, 2):
        want = load_branch_inputs(ref, branch, ("train", "test"))
        got = load_branch_inputs(out, branch, ("train", "test"))
        for split in ("train", "test"):
            assert got[split]["x"].dtype == np.float32
            np.testing.assert_array_equal(got[split]["logits"], want[split]["logits"])
            tol = 0 if compact == "lzf" else 2e-3  # float16 keeps 11 significant bits
            np.testing.assert_allclose(got[split]["x"], want[split]["x"], rtol=tol, atol=tol)
    if compact.endswith("lzf"):
        assert out.stat().st_size < ref.stat().st_size


def test_float16_refuses_values_it_cannot_hold():
    with pytest.raises(CalexError, match="cache.compact: lzf"):
        cache_format.encode_features(np.array([[1.0, 7e4]], np.float32), "float16", "train/feat1")


def test_unknown_option_names_the_key():
    with pytest.raises(CalexError, match="cache.compact is 'int8'"):
        cache_format.feature_itemsize("int8")


def test_cache_that_does_not_fit_is_refused_before_writing(small_run, monkeypatch):
    root, prepared = small_run
    out = root / "full" / "features.h5"
    out.parent.mkdir()
    out.write_bytes(b"an earlier result")
    attach = ("layer1", "layer4")
    # per sample: layer1 Gram (8·9/2 = 36) + layer4 map (64·4·4 = 1024) values, 4 logits
    needed = 100 * ((36 + 1024) * 4 + 4 * 4 + 24)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, needed - 1))
    with pytest.raises(CalexError) as err:
        write_cache(root, prepared, "none", "full/features.h5", attach)
    message = str(err.value)
    assert "\n" not in message and f"{needed / 1e9:.1f} GB" in message
    assert "raw maps at attach point(s) 2" in message and "cache.compact: float16" in message
    assert "file system mounted at" in message and "free space there" in message
    assert out.read_bytes() == b"an earlier result"  # nothing destroyed
    assert not list(out.parent.glob("*.tmp-*"))
    # exactly enough room: the estimate is an upper bound of what gets written
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, needed))
    write_cache(root, prepared, "none", "full/features.h5", attach)
    assert out.stat().st_size <= needed + 64 * 1024  # HDF5 headers and attributes
    # float16 halves the feature bytes: the same disk now holds it with room to spare
    half = 100 * ((36 + 1024) * 2 + 4 * 4 + 24)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, half))
    write_cache(root, prepared, "float16", "full/features.h5", attach)


def test_float16_cache_gives_the_same_sweep(tiny_cascade_run, tmp_path):
    """The tiny pipeline's calexnet sweep (stage functions, shared fixture) redone on a float16
    cache of the same backbone agrees with the float32 one at every margin within 0.1 pp.
    (At the demo's scale the gap is a few test images; docs/formats.md gives the numbers.)"""
    bb_dir = tiny_cascade_run["root"]
    features = tmp_path / "features.h5"
    run_cache_features(tiny_cascade_run["prepared"], bb_dir / "backbone.pt",
                       bb_dir / "probe.pt", ["layer1", "layer2", "layer3"],
                       {"batch_size": 128, "compact": "float16"}, "cpu", features)  # fmt: skip
    with h5py.File(features) as f:
        assert f["train"]["feat1"].dtype == np.float16
    for b in (1, 2, 3):
        prev = [tmp_path / f"branch{k}.npz" for k in range(1, b)]
        run_train_branch(features, b, prev, RECIPE, 0, "cpu", tmp_path / f"branch{b}.pt",
                         tmp_path / f"branch{b}.npz", recipe="calexnet")  # fmt: skip
    outs = [tmp_path / name for name in ("sweep.csv", "thresholds.npz", "exits.npz", "pc.csv")]
    branches = [tmp_path / f"branch{b}.npz" for b in (1, 2, 3)]
    run_sweep_margins(features, branches, {"margins": MARGINS, "calibration": "cascade"}, *outs)
    ref = pd.read_csv(tiny_cascade_run["split"] / "sweep.csv")
    got = pd.read_csv(tmp_path / "sweep.csv")
    assert len(ref) == len(got) == len(MARGINS)
    np.testing.assert_array_equal(ref["margin"], got["margin"])
    for column in ("accuracy", "fr"):
        gap = 100 * np.abs(ref[column].to_numpy() - got[column].to_numpy())
        assert gap.max() <= 0.1, f"{column} differs by {gap.max():.3f} pp"
