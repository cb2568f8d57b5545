"""Nothing runs that calex did not write: a pickle whose loading would run code, placed
wherever calex loads a file, is refused with one line and its code never runs
(docs/bad-input.md, docs/formats.md). Every payload here would create a marker file;
each test asserts the marker never appears."""

from __future__ import annotations

import json
import pickle
import pickletools

import numpy as np
import pytest
import torch
from helpers import RECIPE, Payload, plant_payload

from calex_steps.data.archives import CIFAR10_BATCHES, read_cifar10_python
from calex_steps.errors import CalexError
from calex_steps.models.checkpoints import load_checkpoint, tensor_sha256
from calex_steps.stages import cache_features, import_backbone, train_branch
from calex_steps.stages.export_cascade import run_export_cascade


def error_lines(capsys) -> list[str]:
    return [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "the payload ran"


def _cache_argv(run, backbone, probe, out) -> list[str]:
    return ["--data", str(run["prepared"]), "--backbone", str(backbone), "--probe", str(probe),
            "--attach", '["layer1"]', "--settings", '{"batch_size": 128}', "--device", "cpu",
            "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("place", ["backbone.pt", "probe.pt"])
def test_backbone_or_probe(tiny_cascade_run, tmp_path, marker, capsys, place):
    bb = tiny_cascade_run["root"]
    files = {"backbone.pt": bb / "backbone.pt", "probe.pt": bb / "probe.pt"}
    real = torch.load(files[place], weights_only=True)
    files[place] = tmp_path / place
    plant_payload(files[place], marker, like=real)
    out = tmp_path / "features.h5"
    argv = _cache_argv(tiny_cascade_run, files["backbone.pt"], files["probe.pt"], out)
    assert cache_features.main(argv) == 1
    (line,) = error_lines(capsys)
    assert f"checkpoint {files[place]} was refused: it holds a Python object" in line
    assert "rerun the rule that writes it" in line and not out.exists()


def test_branch_head_at_export(tiny_cascade_run, tmp_path, marker):
    run = tiny_cascade_run["run"]
    evil = tmp_path / "branch1.pt"
    plant_payload(evil, marker, like=torch.load(run / "branch1.pt", weights_only=True))
    heads = [evil, run / "branch2.pt", run / "branch3.pt"]
    with pytest.raises(CalexError, match=f"checkpoint {evil} was refused"):
        run_export_cascade(run, None, None, None, 0.05, tiny_cascade_run["prepared"],
                           tmp_path / "cascade.pt", branches=heads)  # fmt: skip
    assert not (tmp_path / "cascade.pt").exists()


def test_scratch_file_of_branch_training(tiny_cascade_run, tmp_path, marker, capsys):
    out = tmp_path / "run"
    out.mkdir()
    plant_payload(out / "branch1.pt.scratch", marker)
    argv = ["--features", str(tiny_cascade_run["root"] / "features.h5"), "--branch", "1",
            "--recipe", "calexnet", "--settings", json.dumps(RECIPE), "--seed", "0",
            "--device", "cpu", "--out-head", str(out / "branch1.pt"),
            "--out-outputs", str(out / "branch1.npz")]  # fmt: skip
    assert train_branch.main(argv) == 1
    (line,) = error_lines(capsys)
    assert "scratch file" in line and "was refused" in line and "starts over" in line
    assert sorted(p.name for p in out.iterdir()) == ["branch1.pt.scratch"]


def test_users_checkpoint_at_import(tiny_cascade_run, tmp_path, marker, capsys):
    weights = tmp_path / "weights.th"
    plant_payload(weights, marker)
    backbone = {"arch": "resnet18", "width": 0.125,
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
    argv = [
        "--data",
        str(tiny_cascade_run["prepared"]),
        "--backbone",
        json.dumps(backbone),
        "--checkpoint",
        str(weights),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "bb.pt"),
    ]
    assert import_backbone.main(argv) == 1
    (line,) = error_lines(capsys)
    assert f"{weights} was refused: it holds a Python object" in line
    assert "torch.save(model.state_dict(), path)" in line


def test_cifar_batch_from_a_mirror(tmp_path, marker):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in (*CIFAR10_BATCHES, "test_batch"):
        (root / name).write_bytes(pickle.dumps(good))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    assert len(read_cifar10_python(root)["train"]["labels"]) == 10  # the real layout loads
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": []}))
    with pytest.raises(CalexError) as err:
        read_cifar10_python(root)
    message = str(err.value)
    assert "data_batch_3 is not a CIFAR python pickle" in message and "io.open" in message


def test_previous_release_checkpoint_loads_and_a_damaged_one_does_not(tiny_cascade_run,
                                                                       tmp_path):  # fmt: skip
    """A checkpoint as the previous release wrote it (plain values, no digest) loads; one
    whose tensors changed after writing is refused; one holding objects says how to
    regenerate it."""
    current = torch.load(tiny_cascade_run["root"] / "backbone.pt", weights_only=True)
    assert current["tensor_sha256"] == tensor_sha256(current["state_dict"])
    old = {k: v for k, v in current.items() if k != "tensor_sha256"}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["arch"] == current["arch"]
    damaged = dict(current, state_dict=dict(current["state_dict"]))
    damaged["state_dict"]["fc.bias"] = damaged["state_dict"]["fc.bias"] + 1
    torch.save(damaged, tmp_path / "damaged.pt")
    with pytest.raises(CalexError, match="is damaged: its tensors do not match the SHA-256"):
        load_checkpoint(tmp_path / "damaged.pt")
    torch.save(dict(old, val_acc=np.float64(0.5)), tmp_path / "objects.pt")  # numpy scalar
    with pytest.raises(CalexError) as err:
        load_checkpoint(tmp_path / "objects.pt")
    assert "\n" not in str(err.value) and "delete it and rerun the rule" in str(err.value)


def test_the_payload_is_real(tmp_path):
    """The trials above mean something: the payload's pickle tells any unrestricted
    unpickler to call ``open(marker, "w")`` (read from its opcodes, never loaded here)."""
    ops = list(pickletools.genops(pickle.dumps({"note": Payload(tmp_path / "ran")})))
    names = [arg for op, arg, _ in ops if op.name in ("SHORT_BINUNICODE", "BINUNICODE")]
    assert names[:4] == ["note", open.__module__, "open", str(tmp_path / "ran")]
    assert [op.name for op, _, _ in ops].count("REDUCE") == 1  # the call an unpickler makes
