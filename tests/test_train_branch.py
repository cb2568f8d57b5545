"""train_branch on a tiny, learnable feature cache written here with h5py."""

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calex_steps.data.branch_files import write_branch_outputs
from calex_steps.data.feature_cache import features_meta, load_branch_inputs
from calex_steps.errors import CalexError
from calex_steps.models.gram import pack_gram
from calex_steps.models.heads import PrototypeHead, head_macs
from calex_steps.stages.train_branch import main, run_train_branch, run_train_branches
from calex_steps.training.branch import parse_settings

SPLITS = {"train": 600, "val": 200, "test": 200}
NUM_CLASSES = 4
SETTINGS = {
    "head": "augmented",
    "target": "kd",
    "kd_temperature": 4.0,
    "weighting": "uniform",
    "prototypes": 16,
    "cls_epochs": 30,
    "conf_epochs": 10,
    "lr": 1e-2,
    "weight_decay": 0.0,
    "batch_size": 128,
    "calibration": "full",
    "schedule": "sequential",
    "exit_signal": "branch",
}
SHORT = SETTINGS | {"cls_epochs": 4, "conf_epochs": 3}


def _maps(n: int, gen: torch.Generator, w1: torch.Tensor, w2: torch.Tensor):
    """Two stages of a tiny random conv net: 8×8×8 maps, then 16×2×2 maps."""
    images = torch.randn(n, 3, 8, 8, generator=gen)
    m1 = F.conv2d(images, w1, padding=1).relu()  # N×8×8×8
    m2 = F.conv2d(m1, w2, stride=4, padding=1).relu()  # N×16×2×2
    return m1, m2


def write_features(path, scale: float = 1.0, features_id: str = "feat-test") -> None:
    """A features.h5 whose backbone logits are a fixed rule on layer-1 prototype responses."""
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(8, 3, 3, 3, generator=gen) / 5, torch.randn(16, 8, 3, 3, generator=gen) / 8
    teacher_w = torch.randn(6, 8, generator=gen)  # teacher prototypes on layer 1
    mixing = torch.randn(6, NUM_CLASSES, generator=gen)
    with h5py.File(path, "w") as f:
        f.attrs.update({"features_id": features_id, "num_classes": NUM_CLASSES})
        f.attrs["attach_points"] = json.dumps(["layer1", "layer2"])
        stats = None
        for split, n in SPLITS.items():
            m1, m2 = _maps(n, gen, w1, w2)
            resp = torch.einsum("kd,ndhw->nkhw", teacher_w, m1).square().mean((2, 3))  # N×6
            stats = stats or (resp.mean(0), resp.std(0))
            logits = 3.0 * ((resp - stats[0]) / stats[1]) @ mixing
            g = f.create_group(split)
            g["labels"] = logits.argmax(1).numpy().astype(np.int64)
            g["logits"] = logits.numpy().astype(np.float32)
            g["feat1"] = pack_gram(m1 * scale).numpy().astype(np.float32)
            g["feat1"].attrs.update({"kind": "gram", "d": 8, "h": 8, "w": 8})
            g["feat2"] = (m2 * scale).numpy().astype(np.float32)
            g["feat2"].attrs.update({"kind": "map", "d": 16, "h": 2, "w": 2})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "features.h5"
    write_features(path)
    return path


def _run(features, out, branch=1, prev=(), settings=SHORT, seed=0, recipe="r", log=None):
    out.mkdir(parents=True, exist_ok=True)
    head, outputs = out / f"branch{branch}.pt", out / f"branch{branch}.npz"
    summary = run_train_branch(
        features, branch, list(prev), settings, seed, "cpu", head, outputs, log, recipe=recipe
    )
    return summary, head, outputs


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_features_reader(features):
    meta = features_meta(features)
    assert meta["features_id"] == "feat-test" and meta["attach_points"] == ["layer1", "layer2"]
    data = load_branch_inputs(features, 1, ["train", "test"])
    assert data["train"]["x"].shape == (600, 36) and data["train"]["kind"] == "gram"
    assert data["test"]["logits"].dtype == np.float32 and data["test"]["labels"].shape == (200,)
    with pytest.raises(CalexError, match="feat3"):
        load_branch_inputs(features, 3, ["train"])


def test_branch_learns_and_writes_every_output(features, tmp_path):
    summary, head_path, out_path = _run(features, tmp_path, settings=SETTINGS)
    assert summary["agreement"]["train"] > 0.75  # majority class is well below this
    assert summary["agreement"]["test"] > 0.6
    out = _load(out_path)
    for split, n in SPLITS.items():
        pred, conf = out[f"{split}_pred"], out[f"{split}_conf"]
        logits, confs = out[f"{split}_logits"], out[f"{split}_confs"]
        assert pred.dtype == np.int64 and pred.shape == (n,)
        assert conf.dtype == np.float32 and conf.shape == (n,)
        assert logits.shape == confs.shape == (n, NUM_CLASSES) and confs.dtype == np.float32
        assert np.array_equal(pred, logits.argmax(1))
        assert np.array_equal(conf, confs[np.arange(n), pred])
        assert confs.min() >= 0.0 and confs.max() <= 1.0
    meta = json.loads(str(out["meta"]))
    expected_macs = head_macs(PrototypeHead(8, NUM_CLASSES, 16, "augmented"), 8, 8, 8)
    assert meta["head_macs"] == expected_macs == 16 * 8 * 64 + 16 * 64 + 2 * 16 * 32 + 2 * 16 * 4
    assert (meta["recipe"], meta["seed"], meta["branch"]) == ("r", 0, 1)
    assert meta["features_id"] == "feat-test" and meta["settings"] == SETTINGS
    ckpt = torch.load(head_path, weights_only=True)
    head = PrototypeHead(**ckpt["head_config"])
    head.load_state_dict(ckpt["state_dict"])
    assert ckpt["head_config"]["kind"] == "augmented" and ckpt["head_macs"] == expected_macs
    # confident predictions are more often right than unconfident ones
    right = out["val_pred"] == _load_logits_argmax(features, "val")
    high = out["val_conf"] > np.median(out["val_conf"])
    assert right[high].mean() > right[~high].mean()
    assert not (tmp_path / "branch1.pt.scratch").exists()


def _load_logits_argmax(features, split):
    with h5py.File(features, "r") as f:
        return f[split]["logits"][...].argmax(1)


def test_same_seed_gives_identical_outputs(features, tmp_path):
    _, _, a = _run(features, tmp_path / "a", branch=2)
    _, _, b = _run(features, tmp_path / "b", branch=2)
    _, _, c = _run(features, tmp_path / "c", branch=2, seed=1)
    a, b, c = _load(a), _load(b), _load(c)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test_logits"], c["test_logits"])


def _fake_prev(path, features, conf_of, recipe="r", seed=0, branch=1):
    """A branch-1 output file whose train confidence is ``conf_of(labels)``."""
    outputs = {}
    for split in SPLITS:
        labels = _load_logits_argmax(features, split)
        conf = conf_of(labels).astype(np.float32)
        logits = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
        confs = np.repeat(conf[:, None], NUM_CLASSES, axis=1)
        outputs[split] = {"pred": labels, "conf": conf, "logits": logits, "confs": confs}
    meta = {"recipe": recipe, "seed": seed, "branch": branch, "features_id": "feat-test"}
    write_branch_outputs(path, outputs, meta)
    return path


@pytest.mark.parametrize("mode", ["sampling", "loss"])
def test_survivor_weights_come_from_earlier_branches(features, tmp_path, mode):
    # branch 1 releases every sample except class 0 with confidence 1: survivors are class 0
    prev = _fake_prev(tmp_path / "branch1.npz", features, lambda y: (y != 0).astype(float))
    settings = SHORT | {"weighting": "survivor", "survivor_mode": mode, "target": "argmax_ce"}
    _, _, out = _run(features, tmp_path / "b2", branch=2, prev=[prev], settings=settings)
    assert (_load(out)["test_pred"] == 0).mean() > 0.95
    uniform = SHORT | {"target": "argmax_ce"}
    _, _, ref = _run(features, tmp_path / "u", branch=2, prev=[prev], settings=uniform)
    assert (_load(ref)["test_pred"] == 0).mean() < 0.6


def test_earlier_outputs_are_checked(features, tmp_path):
    settings = SHORT | {"weighting": "survivor", "survivor_mode": "sampling"}
    other_seed = _fake_prev(tmp_path / "s.npz", features, lambda y: y * 0.1, seed=7)
    with pytest.raises(CalexError, match="s.npz' has seed 7"):
        _run(features, tmp_path / "x", branch=2, prev=[other_seed], settings=settings)
    other_recipe = _fake_prev(tmp_path / "q.npz", features, lambda y: y * 0.1, recipe="other")
    with pytest.raises(CalexError, match="q.npz' has recipe 'other'"):
        _run(features, tmp_path / "x", branch=2, prev=[other_recipe], settings=settings)
    with pytest.raises(
        CalexError, match=r"survivor weighting needs the outputs of branch\(es\) \[1\]"
    ):
        _run(features, tmp_path / "x", branch=2, prev=[], settings=settings)


def test_cascade_input_reads_previous_logits(features, tmp_path):
    prev = _fake_prev(tmp_path / "branch1.npz", features, lambda y: np.full(len(y), 0.5))
    settings = SETTINGS | {"head": "basic", "target": "argmax_ce", "cascade_input": True}
    settings |= {"cls_epochs": 30, "conf_epochs": 2}
    summary, head_path, _ = _run(features, tmp_path / "z", branch=2, prev=[prev], settings=settings)
    ckpt = torch.load(head_path, weights_only=True)
    assert ckpt["head_config"]["cascade_input_dim"] == NUM_CLASSES
    assert ckpt["state_dict"]["cls.weight"].shape == (NUM_CLASSES, 16 + NUM_CLASSES)
    # the previous logits are one-hot backbone predictions: the head learns to copy them
    assert summary["agreement"]["test"] > 0.95
    alone, _, _ = _run(features, tmp_path / "a", 2, [prev], settings | {"cascade_input": False})
    assert alone["agreement"]["test"] < 0.7
    with pytest.raises(CalexError, match=r"cascade input needs the outputs of branch\(es\) \[1\]"):
        _run(features, tmp_path / "m", branch=2, prev=[], settings=settings)


class _Interrupt(Exception):
    pass


class _Log:
    """Records log lines; raises after the ``stop_after``-th epoch line of ``stage``."""

    def __init__(self, stage: str = "", stop_after: int = 0):
        self.stage, self.stop_after, self.seen, self.lines = stage, stop_after, 0, []

    def info(self, msg, *args):
        line = msg % args
        self.lines.append(line)
        if line.startswith("branch ") and f" stage {self.stage} epoch " in line:
            self.seen += 1
            if self.seen == self.stop_after:
                raise _Interrupt

    warning = info


@pytest.mark.parametrize("stage", ["cls", "conf"])
def test_resumed_run_equals_uninterrupted_run(features, tmp_path, stage):
    settings = SHORT | {"weighting": "survivor", "survivor_mode": "sampling"}
    prev = _fake_prev(tmp_path / "branch1.npz", features, lambda y: y / 4.0)
    _, _, ref = _run(features, tmp_path / "ref", 2, [prev], settings)
    with pytest.raises(_Interrupt):
        _run(features, tmp_path / "cut", 2, [prev], settings, log=_Log(stage, 2))
    scratch = torch.load(tmp_path / "cut" / "branch2.pt.scratch", weights_only=True)
    assert (scratch["stage"], scratch["epoch"]) == (stage, 2)
    assert not (tmp_path / "cut" / "branch2.npz").exists()
    log = _Log()
    _, _, resumed = _run(features, tmp_path / "cut", 2, [prev], settings, log=log)
    assert log.lines[0] == f"resuming stage {stage} after epoch 2"
    assert log.lines[1].startswith(f"branch 2 stage {stage} epoch 3/")
    ref, resumed = _load(ref), _load(resumed)
    assert all(np.array_equal(ref[k], resumed[k]) for k in ref)
    assert not (tmp_path / "cut" / "branch2.pt.scratch").exists()


def test_scratch_of_other_settings_is_ignored(features, tmp_path):
    with pytest.raises(_Interrupt):
        _run(features, tmp_path, 2, settings=SHORT, log=_Log("cls", 2))
    log = _Log()
    _run(features, tmp_path, 2, settings=SHORT | {"lr": 5e-3}, log=log)
    assert log.lines[0].startswith("branch 2 stage cls epoch 1/4")


def test_non_finite_loss_stops_with_advice(tmp_path):
    path = tmp_path / "huge.h5"
    write_features(path, scale=1e20)  # squares overflow float32
    with pytest.raises(CalexError, match="branch 2 stage cls epoch 1.*lower the learning rate"):
        _run(path, tmp_path, branch=2)


def test_settings_are_checked():
    ok = parse_settings(SETTINGS | {"pteenet_lambda": 0.9, "boost_r": 0.5})
    assert ok.kd_temperature == 4.0 and ok.survivor_mode is None
    assert parse_settings(SETTINGS | {"target": "argmax_ce"}).kd_temperature is None
    with pytest.raises(CalexError, match="unknown branch-training setting 'lrr'"):
        parse_settings(SETTINGS | {"lrr": 1.0})
    with pytest.raises(CalexError, match="'survivor_mode'"):
        parse_settings(SETTINGS | {"weighting": "survivor"})
    with pytest.raises(CalexError, match="trains all branches jointly"):
        parse_settings(SETTINGS | {"target": "pteenet"})
    with pytest.raises(CalexError, match="'prototypes' is missing"):
        parse_settings({k: v for k, v in SETTINGS.items() if k != "prototypes"})


def test_cli_writes_outputs_and_reports_errors(features, tmp_path, capsys):
    args = ["--features", str(features), "--branch", "1", "--recipe", "r", "--seed", "0"]
    args += ["--settings", json.dumps(SHORT), "--device", "cpu", "--threads", "1"]
    args += ["--out-head", str(tmp_path / "b1.pt"), "--out-outputs", str(tmp_path / "b1.npz")]
    assert main(args) == 0
    assert _load(tmp_path / "b1.npz")["train_pred"].shape == (600,)
    bad = _fake_prev(tmp_path / "bad.npz", features, lambda y: y * 0.1, seed=3)
    assert main(args + ["--prev", str(bad)]) == 1
    assert "bad.npz' has seed 3" in capsys.readouterr().err


def _heads_and_outputs(out_dir, branch):
    ckpt = torch.load(out_dir / f"branch{branch}.pt", weights_only=True)
    return ckpt["state_dict"], _load(out_dir / f"branch{branch}.npz")


@pytest.mark.parametrize("case", ["uniform_gram", "survivor_cascade_map"])
def test_seeds_trained_together_equal_seeds_trained_alone(features, tmp_path, case):
    """Two seeds in one grouped computation give each seed the head and outputs of its own job
    (same seed streams: initialisation, epoch order, dropout masks, survivor draws)."""
    seeds, branch, prevs, settings = [3, 8], 1, [[], []], SHORT  # feat1: packed Gram
    if case == "survivor_cascade_map":  # feat2: raw maps
        settings = SHORT | {"weighting": "survivor", "survivor_mode": "sampling"}
        settings |= {"cascade_input": True, "target": "argmax_ce"}
        branch = 2
        for s, seed in enumerate(seeds):
            conf = (lambda lo: lambda y: lo + 0.5 * (y == 1))(0.1 * (s + 1))
            path = _fake_prev(tmp_path / f"prev{seed}.npz", features, conf, seed=seed)
            prevs[s] = [path]
    together = [tmp_path / f"together{seed}" for seed in seeds]
    for d in together:
        d.mkdir()
    run_train_branches(features, branch, prevs, settings, seeds, "cpu",
                       [d / f"branch{branch}.pt" for d in together],
                       [d / f"branch{branch}.npz" for d in together], recipe="r")  # fmt: skip
    for seed, prev, d in zip(seeds, prevs, together, strict=True):
        _run(features, tmp_path / f"alone{seed}", branch, prev, settings, seed=seed)
        head_t, out_t = _heads_and_outputs(d, branch)
        head_a, out_a = _heads_and_outputs(tmp_path / f"alone{seed}", branch)
        for name, value in head_a.items():
            assert torch.allclose(head_t[name], value, atol=1e-5, rtol=0), name
        assert json.loads(str(out_t["meta"])) == json.loads(str(out_a["meta"]))
        assert np.allclose(out_t["test_confs"], out_a["test_confs"], atol=1e-5)
        assert np.array_equal(out_t["test_pred"], out_a["test_pred"])
    # the two seeds really are different runs
    first, second = (_heads_and_outputs(d, branch)[0] for d in together)
    assert not torch.allclose(first["cls.weight"], second["cls.weight"], atol=1e-3)


def test_rows_read_from_disk_equal_rows_in_memory(features, tmp_path):
    """The training split read batch by batch from the file (memory budget 0) trains the
    same head as the split held in RAM."""
    out_ram, out_disk = tmp_path / "ram", tmp_path / "disk"
    for out, budget in ((out_ram, 1e9), (out_disk, 0.0)):
        out.mkdir()
        run_train_branch(features, 1, [], SHORT, 0, "cpu", out / "branch1.pt",
                         out / "branch1.npz", recipe="r", memory_mb=budget)  # fmt: skip
    ram, disk = _load(out_ram / "branch1.npz"), _load(out_disk / "branch1.npz")
    assert all(np.array_equal(ram[k], disk[k]) for k in ram)
