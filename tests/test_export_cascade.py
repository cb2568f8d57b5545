"""The cascade module against the simulated cascade of a real tiny run, and its export."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from helpers import HEAD_EXITS, train_head_kind

from calex_steps.cascade import module as cascade_module
from calex_steps.cascade.build import build_cascade
from calex_steps.cascade.module import attach_unit_index, backbone_units
from calex_steps.errors import CalexError
from calex_steps.models.backbones import build_backbone
from calex_steps.stages.export_cascade import run_export_cascade


def test_module_agrees_exactly_with_simulated_cascade(tiny_cascade_run):
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    images = tiny_cascade_run["images"]
    exited_early = 0
    for i, margin in enumerate(exits["margins"]):
        model = build_cascade(tiny_cascade_run["run"], float(margin))
        with torch.inference_mode():  # two uneven batches: survivors differ per batch
            parts = [model(images[:50]), model(images[50:])]
        pred = torch.cat([p[0] for p in parts]).numpy()
        exit_branch = torch.cat([p[1] for p in parts]).numpy()
        np.testing.assert_array_equal(exit_branch, exits["exit_branch"][i])
        np.testing.assert_array_equal(pred, exits["final_pred"][i])
        exited_early += int((exit_branch < 3).sum())
    assert exited_early > 0  # the comparison covers branch exits, not only the backbone


def test_backbone_path_matches_cached_logits(tiny_cascade_run):
    model = build_cascade(tiny_cascade_run["run"], 0.2)
    with torch.inference_mode():
        logits = model.backbone_logits(tiny_cascade_run["images"]).numpy()
    with h5py.File(tiny_cascade_run["root"] / "features.h5", "r") as f:
        np.testing.assert_allclose(logits, f["test"]["logits"][...], atol=1e-5)


def test_only_survivors_reach_later_stages(tiny_cascade_run):
    model = build_cascade(tiny_cascade_run["run"], 0.05)
    seen = []
    hook = model.tail.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    with torch.inference_mode():
        _, exit_branch, conf = model(tiny_cascade_run["images"])
    hook.remove()
    survivors = int((exit_branch == 3).sum())
    assert 0 < survivors < len(exit_branch)
    assert seen == [survivors]  # the tail (layer4, pool, probe) ran on non-exited samples only
    assert torch.all((conf > 0) & (conf <= 1))


def test_exported_artifact_loads_without_calex(tiny_cascade_run, tmp_path):
    out = tmp_path / "cascade.pt"
    meta = run_export_cascade(tiny_cascade_run["run"], None, None, None, 0.05,
                              tiny_cascade_run["prepared"], out)  # fmt: skip
    assert meta["recipe"] == "calexnet" and meta["margin"] == 0.05
    np.save(tmp_path / "images.npy", tiny_cascade_run["images"][:40].numpy())
    script = (
        "import sys, json, numpy, torch\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "p, e, c = m(torch.from_numpy(numpy.load(sys.argv[2])))\n"
        "assert not any(k.startswith('calex') for k in sys.modules)\n"
        "meta = json.loads(m.meta_json)\n"
        "print(json.dumps([p.tolist(), e.tolist(), m.class_names, meta['recipe']]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "images.npy")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    pred, exit_branch, names, recipe = json.loads(result.stdout)
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    row = list(exits["margins"]).index(0.05)
    assert pred == exits["final_pred"][row][:40].tolist()
    assert exit_branch == exits["exit_branch"][row][:40].tolist()
    assert names == [f"coarse{i}" for i in range(4)] and recipe == "calexnet"


def test_inner_attach_point_and_unsupported_model():
    model = build_backbone("resnet18", width=0.125, num_classes=4)
    units, _ = backbone_units(model)
    assert [n for n, _ in units][:4] == ["stem", "layer1.0", "layer1.1", "layer2.0"]
    assert attach_unit_index(units, "layer2") == 4
    assert attach_unit_index(units, "layer3.0") == 5
    with pytest.raises(CalexError, match="attach point 'layer9'"):
        attach_unit_index(units, "layer9")
    with pytest.raises(CalexError, match="cannot split a Sequential"):
        backbone_units(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    segments, tail = cascade_module.split_backbone(model, model.fc, ["layer1.1", "layer3.0"])
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        out = tail(segments[1](segments[0](x)))
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), atol=1e-5)


def test_unknown_margin_is_one_clear_error(tiny_cascade_run):
    with pytest.raises(CalexError, match="no margin 0.33; choose one of 0.01"):
        build_cascade(tiny_cascade_run["run"], 0.33)


def sweep_with(run_info, tmp_path, signal, extra=None, stem="branch"):
    """Sweep the tiny run's branch (or ensemble) files with another exit signal."""
    from calex_steps.stages.sweep_margins import run_sweep_margins

    run, root = run_info["run"], run_info["root"]
    settings = {"margins": [0.01, 0.05, 0.2, 0.4], "calibration": "cascade", "exit_signal": signal}
    outs = [tmp_path / f"{signal}_{n}" for n in ("sweep.csv", "thr.npz", "exits.npz", "pc.csv")]
    files = [run / f"{stem}{b}.npz" for b in (1, 2, 3)]
    run_sweep_margins(root / "features.h5", files, settings | (extra or {}), *outs)
    return outs[1], np.load(outs[2])


@pytest.mark.parametrize(
    ("signal", "extra"),
    [
        ("max_softmax", {"temperature_scaling": True}),
        ("entropy", None),
        ("top2_gap", None),
        ("patience", {"thresholds": "global"}),
        ("ztw_ensemble", None),
    ],  # fmt: skip
)
def test_every_exit_signal_agrees_with_the_simulator(tiny_cascade_run, tmp_path, signal, extra):
    run = tiny_cascade_run["run"]
    stem, ensembles = "branch", None
    if signal == "ztw_ensemble":  # ZTW's ensemble fitted over this run's branches
        from calex_steps.stages.ztw_ensemble import run_ztw_ensemble

        stem = "ztw_ensemble"
        ensembles = [tmp_path / f"ztw_ensemble{b}.npz" for b in (1, 2, 3)]
        run_ztw_ensemble(tiny_cascade_run["root"] / "features.h5",
                         [run / f"branch{b}.npz" for b in (1, 2, 3)], 0, ensembles, steps=30,
                         recipe="calexnet")  # fmt: skip
        for b, path in enumerate(ensembles, 1):
            (run / f"ztw_ensemble{b}.npz").write_bytes(path.read_bytes())
    thresholds, exits = sweep_with(tiny_cascade_run, tmp_path, signal, extra, stem)
    images = tiny_cascade_run["images"]
    early = 0
    for i, margin in enumerate(exits["margins"]):
        model = build_cascade(run, float(margin), thresholds=thresholds, exit_signal=signal,
                              ensembles=ensembles)  # fmt: skip
        with torch.inference_mode():
            parts = [model(images[:70]), model(images[70:])]
            ones = [model(images[j : j + 1]) for j in range(0, len(images), 37)]  # batch of one
        exit_branch = torch.cat([p[1] for p in parts]).numpy()
        np.testing.assert_array_equal(exit_branch, exits["exit_branch"][i])
        np.testing.assert_array_equal(torch.cat([p[0] for p in parts]).numpy(),
                                      exits["final_pred"][i])  # fmt: skip
        np.testing.assert_array_equal(torch.cat([o[1] for o in ones]).numpy(),
                                      exits["exit_branch"][i][::37])  # fmt: skip
        early += int((exit_branch < 3).sum())
    assert early > 0
    for b in (1, 2, 3):
        (run / f"ztw_ensemble{b}.npz").unlink(missing_ok=True)


def test_artifact_with_a_logit_signal_and_channels_last(tiny_cascade_run, tmp_path):
    from calex_steps.cascade.artifact import load_artifact, save_artifact

    model = build_cascade(tiny_cascade_run["run"], 0.05, exit_signal="top2_gap",
                          channels_last=True)  # fmt: skip
    save_artifact(model, tmp_path / "c.pt")
    loaded = load_artifact(tmp_path / "c.pt")
    images = tiny_cascade_run["images"][:64]
    with torch.inference_mode():
        for a, b in zip(loaded(images), model(images), strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert loaded.backbone_logits(images).shape == (64, 4)


@pytest.mark.parametrize("kind", list(HEAD_EXITS))
def test_every_head_kind_at_any_exit_agrees_with_the_simulator(
    tiny_cascade_run, every_form_cache, kind, tmp_path
):
    """Branches of every head kind, trained at blocks the backbone's attach points do not
    name, exported with their thresholds: the module's exits and predictions equal the
    simulator's for every test image, in batches and one by one."""
    exits_at = HEAD_EXITS[kind]
    run, thresholds, exits = train_head_kind(every_form_cache, kind, tmp_path)
    images = tiny_cascade_run["images"]
    early = 0
    for i, margin in enumerate(exits["margins"]):
        model = build_cascade(run, float(margin), backbone=every_form_cache / "backbone.pt",
                              probe=every_form_cache / "probe.pt",
                              features=every_form_cache / "features.h5",
                              thresholds=thresholds)  # fmt: skip
        assert model.meta_json and json.loads(model.meta_json)["attach_points"] == exits_at
        with torch.inference_mode():
            parts = [model(images[:70]), model(images[70:])]
            ones = [model(images[j : j + 1]) for j in range(0, len(images), 37)]
        exit_branch = torch.cat([p[1] for p in parts]).numpy()
        np.testing.assert_array_equal(exit_branch, exits["exit_branch"][i])
        np.testing.assert_array_equal(torch.cat([p[0] for p in parts]).numpy(),
                                      exits["final_pred"][i])  # fmt: skip
        np.testing.assert_array_equal(torch.cat([o[1] for o in ones]).numpy(),
                                      exits["exit_branch"][i][::37])  # fmt: skip
        early += int((exit_branch < len(exits_at)).sum())
    assert early > 0
