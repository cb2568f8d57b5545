"""ZTW's geometric ensemble: the formula by hand, the fit, and the stage's files."""

import json
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calex_steps.data.branch_files import load_branches, write_branch_outputs
from calex_steps.errors import CalexError
from calex_steps.stages.sweep_margins import run_sweep_margins
from calex_steps.stages.ztw_ensemble import main, run_ztw_ensemble
from calex_steps.training.ztw import ensemble_logits, ensemble_outputs, fit_ensemble

SIZES = {"train": 500, "val": 300, "test": 300}
C = 4


def test_ensemble_formula_by_hand():
    # members: z1 = [0, 0] -> log [.5, .5]; z2 = [ln 3, 0] -> log [.75, .25]
    log_probs = F.log_softmax(torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]]), dim=2)
    a, b = torch.tensor([0.0, math.log(2.0)]), torch.tensor([0.1, 0.0])
    # ẑ = (1/2)(1·log[.5,.5] + 2·log[.75,.25]) + b
    want = [0.5 * math.log(0.5) + math.log(0.75) + 0.1, 0.5 * math.log(0.5) + math.log(0.25)]
    assert ensemble_logits(log_probs, a, b)[0].tolist() == pytest.approx(want, rel=1e-6)
    out = ensemble_outputs(log_probs, a, b)
    # ẑ0 − ẑ1 = ln 3 + 0.1, so the winning probability is 1 / (1 + e^-0.1 / 3)
    assert out["pred"].tolist() == [0]
    assert out["conf"][0] == pytest.approx(1 / (1 + math.exp(-0.1) / 3), rel=1e-6)
    assert np.allclose(np.exp(out["logits"]), out["confs"]) and out["confs"].sum() == pytest.approx(
        1
    )


def _members(gen, n, target, noise):
    """Log-softmax of logits = 3·onehot(target) + noise·N(0, 1), one member per noise level."""
    onehot = F.one_hot(target, C).float()
    return torch.stack(
        [F.log_softmax(3 * onehot + s * torch.randn(n, C, generator=gen), 1) for s in noise]
    )


def test_fit_weights_the_informative_member_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, C, (400,), generator=gen)
    members = _members(gen, 400, target, noise=[30.0, 0.5])  # member 1 is almost noise
    start = F.cross_entropy(ensemble_logits(members, torch.zeros(2), torch.zeros(C)), target)
    a, b, nll = fit_ensemble(members, target, 300, 0.05, torch.Generator().manual_seed(1))
    assert a[1] > a[0] + 1.0 and nll < start.item() - 0.5 and b.shape == (C,)
    again = fit_ensemble(members, target, 300, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    a0, b0, _ = fit_ensemble(members, target, 1, 1e-12, torch.Generator().manual_seed(1))
    assert a0.abs().max() < 0.05 and b0.abs().max() < 1e-9  # a ~ N(0, 0.01²), b = 0


def _write_cache(path):
    gen = torch.Generator().manual_seed(0)
    with h5py.File(path, "w") as f:
        f.attrs.update({"features_id": "fid", "num_classes": C})
        f.attrs["attach_points"] = json.dumps(["layer1", "layer2"])
        f.attrs["stage_macs"] = json.dumps({"layer1": 100, "layer2": 300, "total": 1000})
        for sp, n in SIZES.items():
            logits = 4 * torch.randn(n, C, generator=gen)
            g = f.create_group(sp)
            g["logits"] = logits.numpy().astype(np.float32)
            g["labels"] = logits.argmax(1).numpy().astype(np.int64)
    return path


def _write_branches(dirpath, cache, recipe="ztw", seed=0):
    """Branch files whose logits are the backbone's plus noise (branch 2 less noisy)."""
    gen = torch.Generator().manual_seed(5)
    paths = []
    for branch, noise in ((1, 8.0), (2, 2.0)):
        outputs = {}
        with h5py.File(cache, "r") as f:
            for sp in SIZES:
                teacher = torch.from_numpy(f[sp]["logits"][...])
                logits = (teacher + noise * torch.randn(teacher.shape, generator=gen)).numpy()
                confs = np.full_like(logits, 0.5)
                pred = logits.argmax(1)
                outputs[sp] = {"pred": pred, "conf": confs[:, 0], "logits": logits, "confs": confs}
        meta = {
            "recipe": recipe,
            "seed": seed,
            "branch": branch,
            "features_id": "fid",
            "head_macs": 10 * branch,
            "settings": {"head": "basic"},
        }
        paths.append(dirpath / f"branch{branch}.npz")
        write_branch_outputs(paths[-1], outputs, meta)
    return paths


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_stage_writes_exit_signal_files_the_sweep_reads(tmp_path):
    cache = _write_cache(tmp_path / "features.h5")
    branches = _write_branches(tmp_path, cache)
    outs = [tmp_path / "ztw_ensemble1.npz", tmp_path / "ztw_ensemble2.npz"]
    summary = run_ztw_ensemble(cache, branches, 0, outs, steps=200, lr=0.05, recipe="ztw")
    with h5py.File(cache, "r") as f:
        y_train = f["train"]["logits"][...].argmax(1)
    for exit_l, path in enumerate(outs, start=1):
        out = _load(path)
        for sp, n in SIZES.items():
            assert out[f"{sp}_pred"].shape == (n,) and out[f"{sp}_pred"].dtype == np.int64
            assert out[f"{sp}_logits"].shape == out[f"{sp}_confs"].shape == (n, C)
            assert np.allclose(out[f"{sp}_conf"], out[f"{sp}_confs"].max(1))
            assert np.array_equal(out[f"{sp}_pred"], out[f"{sp}_logits"].argmax(1))
        meta = json.loads(str(out["meta"]))
        assert (meta["branch"], meta["head_macs"], meta["recipe"]) == (exit_l, 10 * exit_l, "ztw")
        assert len(meta["ensemble_a"]) == exit_l and len(meta["ensemble_b"]) == C
        assert meta["exit_signal"] == "ztw_ensemble" and meta["features_id"] == "fid"
    # exit 2 combines both members and beats branch 2 alone on the fitting split
    alone = np.mean(_load(branches[1])["train_pred"] == y_train)
    assert summary[1]["train_agreement"] > alone
    assert summary[1]["a"][1] > summary[1]["a"][0]  # the less noisy member weighs more
    assert [m["branch"] for _, m in load_branches(outs, "fid")] == [1, 2]
    sweep_outs = [tmp_path / n for n in ("s.csv", "t.npz", "e.npz", "p.csv")]
    settings = {"margins": [0.05, 0.4], "calibration": "full"}
    table = run_sweep_margins(cache, outs, settings, *sweep_outs)
    assert list(table["margin"]) == [0.05, 0.4] and table["fr"].iloc[1] > table["fr"].iloc[0]


def test_inputs_are_checked(tmp_path, capsys):
    cache = _write_cache(tmp_path / "features.h5")
    branches = _write_branches(tmp_path, cache, seed=3)
    outs = [str(tmp_path / "e1.npz"), str(tmp_path / "e2.npz")]
    with pytest.raises(CalexError, match="branch1.npz' has seed 3, expected 0"):
        run_ztw_ensemble(cache, branches, 0, outs, recipe="ztw")
    with pytest.raises(CalexError, match="branch2.npz' has branch 2, expected 1"):
        run_ztw_ensemble(cache, branches[::-1], 3, outs, recipe="ztw")
    args = ["--features", str(cache), "--recipe", "ztw", "--seed", "3", "--steps", "5"]
    args += ["--branches", *map(str, branches)]
    assert main(args + ["--out", *outs]) == 0
    assert _load(outs[1])["test_conf"].shape == (300,)
    assert main(args + ["--out", outs[0]]) == 1
    assert "got 2 branch files and 1 outputs" in capsys.readouterr().err
