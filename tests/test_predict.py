"""The predict CLI on real PNG files, and its one-line errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from calex_steps import predict
from calex_steps.stages.export_cascade import run_export_cascade


@pytest.fixture(scope="module")
def artifact(tiny_cascade_run, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("artifact") / "cascade.pt"
    run_export_cascade(tiny_cascade_run["run"], None, None, None, 0.05,
                       tiny_cascade_run["prepared"], out)  # fmt: skip
    return out


def test_prints_one_line_per_image(tiny_cascade_run, artifact, tmp_path, capsys):  # noqa: F811
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    row = list(exits["margins"]).index(0.05)
    paths = []
    for i in (0, 1):
        path = tmp_path / f"test{i}.png"
        Image.fromarray(tiny_cascade_run["images"][i].numpy()).save(path)
        paths.append(str(path))
    big = tmp_path / "big.jpg"  # any size and mode is accepted
    Image.new("L", (100, 60), color=128).save(big)
    assert predict.main(["--model", str(artifact), *paths, str(big)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines[:2]):
        path, name, where, conf = line.split("\t")
        exit_branch = exits["exit_branch"][row][i]
        assert path == paths[i]
        assert name == f"coarse{exits['final_pred'][row][i]}"
        assert where == ("backbone" if exit_branch == 3 else f"branch {exit_branch + 1}")
        assert 0.0 < float(conf) <= 1.0
    assert lines[2].startswith(f"{big}\tcoarse")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("calex error:")]
    assert len(lines) == 1
    return lines[0]


def test_missing_image(artifact, tmp_path, capsys):
    assert predict.main(["--model", str(artifact), str(tmp_path / "nope.png")]) == 1
    assert "nope.png does not exist" in _error_line(capsys)


def test_not_an_image(artifact, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert predict.main(["--model", str(artifact), str(text)]) == 1
    assert "notes.png is not a readable image" in _error_line(capsys)


def test_corrupt_artifact(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    bad = tmp_path / "cascade.pt"
    bad.write_bytes(b"not a model at all")
    assert predict.main(["--model", str(bad), str(image)]) == 1
    assert "cascade.pt is not a TorchScript cascade" in _error_line(capsys)
    assert predict.main(["--model", str(tmp_path / "gone.pt"), str(image)]) == 1
    assert "gone.pt does not exist" in _error_line(capsys)


def test_onnx_runtime_prints_the_same_lines(tiny_cascade_run, artifact, onnx_export, tmp_path,
                                            capsys):  # fmt: skip
    paths = []
    for i in range(0, 120, 11):
        paths.append(str(tmp_path / f"test{i}.png"))
        Image.fromarray(tiny_cascade_run["images"][i].numpy()).save(paths[-1])
    assert predict.main(["--model", str(artifact), *paths]) == 0
    torchscript = capsys.readouterr().out.splitlines()
    assert predict.main(["--runtime", "onnx", "--model", str(onnx_export["model"]), *paths]) == 0
    onnx = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in onnx] == [t.split("\t")[:3] for t in torchscript]
    for a, b in zip(onnx, torchscript, strict=True):  # both print 4 decimals
        assert abs(float(a.split("\t")[3]) - float(b.split("\t")[3])) <= 1e-4


def test_onnx_runtime_errors_are_one_line(artifact, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert predict.main(["--runtime", "onnx", "--model", str(artifact), str(image)]) == 1
    assert "is not a loadable ONNX model" in _error_line(capsys)
