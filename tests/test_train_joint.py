"""train_joint (PTEEnet, BoostNet) end to end on the tiny feature cache of test_train_branch."""

import json

import h5py
import numpy as np
import pytest
import torch
from test_train_branch import NUM_CLASSES, SPLITS, write_features

from calex_steps.errors import CalexError
from calex_steps.models.heads import PrototypeHead
from calex_steps.stages.train_joint import main, run_train_joint
from calex_steps.training.joint import exit_cost_fractions, parse_joint_settings

STAGE_MACS = {"layer1": 250, "layer2": 750, "total": 1000}
BASE = {
    "head": "basic",
    "weighting": "uniform",
    "prototypes": 16,
    "cls_epochs": 25,
    "conf_epochs": 10,
    "lr": 1e-2,
    "weight_decay": 0.0,
    "batch_size": 128,
    "calibration": "full",
    "schedule": "joint",
    "cascade_input": False,
    "exit_signal": "branch",
}
PTEENET = BASE | {"target": "pteenet", "pteenet_lambda": 0.9}
BOOSTNET = BASE | {"target": "boostnet", "boost_r": 0.5}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cache(path, scale=1.0):
    write_features(path, scale=scale)
    with h5py.File(path, "a") as f:
        f.attrs["stage_macs"] = json.dumps(STAGE_MACS)
    return path


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return _cache(tmp_path_factory.mktemp("cache") / "features.h5")


class _Log:
    """Records log lines; raises after the ``stop_after``-th epoch line starting with ``prefix``."""

    def __init__(self, prefix: str = "", stop_after: int = 0):
        self.prefix, self.stop_after, self.seen, self.lines = prefix, stop_after, 0, []

    def info(self, msg, *args):
        line = msg % args
        self.lines.append(line)
        if self.prefix and line.startswith(self.prefix):
            self.seen += 1
            if self.seen == self.stop_after:
                raise _Interrupt

    warning = info


class _Interrupt(Exception):
    pass


def _run(features, out, settings, seed=0, log=None):
    out.mkdir(parents=True, exist_ok=True)
    heads = [out / f"branch{b}.pt" for b in (1, 2)]
    outputs = [out / f"branch{b}.npz" for b in (1, 2)]
    summary = run_train_joint(features, settings, seed, "cpu", heads, outputs, log, recipe="j")
    return summary, heads, outputs


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _check_files(outputs, heads, settings):
    """Same keys, dtypes, shapes and meta as a sequential branch output."""
    for b, (out_path, head_path) in enumerate(zip(outputs, heads, strict=True), start=1):
        out = _load(out_path)
        assert set(out) == {
            f"{sp}_{k}" for sp in SPLITS for k in ("pred", "conf", "logits", "confs")
        } | {"meta"}
        for sp, n in SPLITS.items():
            pred, conf, logits = out[f"{sp}_pred"], out[f"{sp}_conf"], out[f"{sp}_logits"]
            assert pred.dtype == np.int64 and pred.shape == (n,) and conf.dtype == np.float32
            assert logits.shape == out[f"{sp}_confs"].shape == (n, NUM_CLASSES)
            assert np.array_equal(pred, logits.argmax(1))
            assert np.array_equal(conf, out[f"{sp}_confs"][np.arange(n), pred])
        meta = json.loads(str(out["meta"]))
        assert (meta["recipe"], meta["seed"], meta["branch"]) == ("j", 0, b)
        assert meta["features_id"] == "feat-test" and meta["settings"] == settings
        ckpt = torch.load(head_path, weights_only=True)
        assert ckpt["head_macs"] == meta["head_macs"] > 0 and ckpt["branch"] == b
    assert not (heads[0].parent / "branch1.pt.scratch").exists()


def test_pteenet_warms_up_classifiers_then_opens_gates_with_the_cost(features, tmp_path):
    # The toy backbone is always "right" (y* is its argmax): only the cost term pays for
    # exiting early, so the gates must open further as lambda grows.
    settings = PTEENET | {"conf_epochs": 15}
    log = _Log()
    summary, heads, outputs = _run(features, tmp_path / "a", settings, log=log)
    _check_files(outputs, heads, settings)
    # the classifiers learn in the warm-up (majority class: 41% of test)
    assert summary["agreement"]["test"][0] > 0.55 and summary["loss_weights"] is None
    warmup = [line for line in log.lines if line.startswith("joint stage epoch")]
    gate = [line for line in log.lines if line.startswith("gate stage epoch")]
    assert len(warmup) == 25 and len(gate) == 15
    first, last = (float(line.split(" loss ")[1].split()[0]) for line in (warmup[0], warmup[-1]))
    assert last < first - 0.2
    # the heads' MACs count in the cost chain, as in the sweep's FR
    costs = next(line for line in log.lines if line.startswith("pteenet: exit costs"))
    c1, c2 = (float(v) for v in costs.split("[")[1].split("]")[0].split(","))
    assert 0.25 < c1 < c2 - 0.5 and float(costs.split("end ")[1].split()[0]) > 1.0
    # the cost weight decides how far the gates open
    _, _, free = _run(features, tmp_path / "b", settings | {"pteenet_lambda": 0.0})
    _, _, dear = _run(features, tmp_path / "c", settings | {"pteenet_lambda": 4.0})
    gates = [_load(o[0])["val_conf"].mean() for o in (free, outputs, dear)]
    assert gates[0] < gates[1] < gates[2] and gates[2] > 0.5, gates


def _argmax_logits(features, split):
    with h5py.File(features, "r") as f:
        return f[split]["logits"][...].argmax(1)


def test_boostnet_outputs_are_additive_and_report_weights(features, tmp_path):
    log = _Log()
    settings = BOOSTNET | {"cls_epochs": 40, "lr": 2e-2}
    summary, heads, outputs = _run(features, tmp_path, settings, log=log)
    _check_files(outputs, heads, settings)
    weights = summary["loss_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(2.0, rel=1e-5)
    for path in outputs:
        assert json.loads(str(_load(path)["meta"]))["loss_weights"] == weights
    assert any(line.startswith(f"final loss weights g_l {weights}") for line in log.lines)
    assert any(line.startswith("branch 2 stage conf epoch 10/10") for line in log.lines)
    # majority class: 42% of train; both additive exits learn the backbone's rule
    assert min(summary["agreement"]["train"]) > 0.65 and summary["agreement"]["test"][0] > 0.6
    # branch 2's logits are F_2 = f_2 + r·f_1, recomputed from the saved heads
    x = {b: torch.from_numpy(_feat(features, b)) for b in (1, 2)}
    f = []
    for b, path in zip((1, 2), heads, strict=True):
        ckpt = torch.load(path, weights_only=True)
        head = PrototypeHead(**ckpt["head_config"]).eval()
        head.load_state_dict(ckpt["state_dict"])
        with torch.no_grad():
            f.append(head(x[b])[0].numpy())
    logits2 = _load(outputs[1])["test_logits"]
    assert np.allclose(logits2, f[1] + 0.5 * f[0], atol=1e-4)
    assert np.allclose(_load(outputs[0])["test_logits"], f[0], atol=1e-4)


def _feat(features, branch):
    with h5py.File(features, "r") as f:
        return f["test"][f"feat{branch}"][...]


@pytest.mark.parametrize(
    ("settings", "prefix", "resume_line"),
    [
        (PTEENET, "joint stage epoch", "resuming stage joint branch 0 after epoch 2"),
        (BOOSTNET, "branch 2 stage conf", "resuming stage conf branch 2 after epoch 2"),
    ],
)
def test_resumed_run_equals_uninterrupted_run(features, tmp_path, settings, prefix, resume_line):
    short = settings | {"cls_epochs": 4, "conf_epochs": 3}
    _, _, ref = _run(features, tmp_path / "ref", short)
    with pytest.raises(_Interrupt):
        _run(features, tmp_path / "cut", short, log=_Log(prefix, 2))
    assert (tmp_path / "cut" / "branch1.pt.scratch").exists()
    assert not (tmp_path / "cut" / "branch1.npz").exists()
    log = _Log()
    _, _, resumed = _run(features, tmp_path / "cut", short, log=log)
    assert resume_line in log.lines
    for a, b in zip(ref, resumed, strict=True):
        a, b = _load(a), _load(b)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_advice(tmp_path):
    path = _cache(tmp_path / "huge.h5", scale=1e20)  # squares overflow float32
    with pytest.raises(CalexError, match=r"joint stage epoch 1.*lower the learning"):
        _run(path, tmp_path / "o", PTEENET)


def test_settings_are_checked():
    cfg = parse_joint_settings(PTEENET | {"boost_r": 0.5})
    assert cfg.pteenet_lambda == 0.9 and cfg.boost_r is None
    assert parse_joint_settings(BOOSTNET).boost_r == 0.5
    with pytest.raises(CalexError, match="needs 'weighting: uniform'"):
        parse_joint_settings(PTEENET | {"weighting": "survivor"})
    with pytest.raises(CalexError, match="needs 'pteenet_lambda'"):
        parse_joint_settings({k: v for k, v in PTEENET.items() if k != "pteenet_lambda"})
    with pytest.raises(CalexError, match="target 'kd' is not a joint target"):
        parse_joint_settings(BASE | {"target": "kd"})
    with pytest.raises(CalexError, match="unknown joint-training setting 'kd_temperature'"):
        parse_joint_settings(PTEENET | {"kd_temperature": 4.0})
    with pytest.raises(CalexError, match="'lr' is missing"):
        parse_joint_settings({k: v for k, v in BOOSTNET.items() if k != "lr"})


def test_cost_fractions_come_from_stage_macs(tmp_path):
    meta = {"stage_macs": STAGE_MACS, "attach_points": ["layer1", "layer2"]}
    assert exit_cost_fractions(meta, "f.h5") == [0.25, 0.75]
    with pytest.raises(CalexError, match="'f.h5' stage_macs has no entry for \\['layer2'\\]"):
        exit_cost_fractions(meta | {"stage_macs": {"layer1": 1, "total": 2}}, "f.h5")
    bare = tmp_path / "bare.h5"
    write_features(bare)
    with pytest.raises(CalexError, match="lacks the stage_macs/attach_points attributes"):
        _run(bare, tmp_path / "o", PTEENET)


def test_cli_writes_outputs_and_reports_errors(features, tmp_path, capsys):
    short = json.dumps(BOOSTNET | {"cls_epochs": 2, "conf_epochs": 1})
    heads = [str(tmp_path / f"b{b}.pt") for b in (1, 2)]
    outs = [str(tmp_path / f"b{b}.npz") for b in (1, 2)]
    args = ["--features", str(features), "--recipe", "j", "--seed", "0", "--settings", short]
    args += ["--device", "cpu", "--threads", "1", "--out-heads", *heads]
    assert main(args + ["--out-outputs", *outs]) == 0
    assert _load(outs[1])["val_pred"].shape == (200,)
    assert main(args + ["--out-outputs", outs[0]]) == 1
    assert (
        "has 2 exits ['layer1', 'layer2'] but got 2 head and 1 output paths"
        in capsys.readouterr().err
    )
