"""The predict CLI on real PNG files, and its one-line errors on bad input."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest
import torch
from helpers import Payload
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


def test_unreadable_image_is_skipped_with_one_warning(artifact, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), color=(200, 10, 10)).save(good)
    assert predict.main(["--model", str(artifact), str(text), str(good)]) == 2
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(good)]
    warnings = [s for s in captured.err.splitlines() if "notes.png" in s]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and "skipped" in warnings[0]
    assert "calex error" not in captured.err


def test_folder_glob_batches_and_csv(artifact, tmp_path, capsys):
    """A folder is searched recursively (images only, hidden ones skipped, sorted), a
    glob pattern expands, batches of 2 give the same answers as one batch, --out writes
    CSV, and an unreadable image is named once while the rest are classified (exit 2)."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    colours = {"b.png": (250, 0, 0), "a.jpg": (0, 250, 0), "sub/c.png": (0, 0, 250)}
    for name, colour in colours.items():
        Image.new("RGB", (48, 40), color=colour).save(folder / name)
    Image.new("RGB", (32, 32)).save(folder / ".hidden" / "x.png")
    Image.new("RGB", (32, 32)).save(folder / ".dot.png")
    (folder / "notes.txt").write_text("not an image, not a picture suffix")
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    expected = [folder / "a.jpg", folder / "b.png", folder / "sub" / "broken.png",
                folder / "sub" / "c.png"]  # fmt: skip
    assert predict.expand_inputs([str(folder)]) == expected
    assert predict.expand_inputs([str(folder / "**" / "*.png")]) == [expected[i] for i in (1, 2, 3)]

    assert predict.main(["--model", str(artifact), str(folder)]) == 2
    captured = capsys.readouterr()
    whole = captured.out.splitlines()
    assert [line.split("\t")[0] for line in whole] == [str(expected[i]) for i in (0, 1, 3)]
    assert [s for s in captured.err.splitlines() if "broken.png" in s][0].startswith(
        "calex warning: image"
    )
    out = tmp_path / "pred.csv"
    argv = ["--model", str(artifact), "--batch-size", "2", "--out", str(out), str(folder)]
    assert predict.main(argv) == 2
    assert capsys.readouterr().out == ""
    rows = out.read_text().splitlines()
    assert rows[0] == "path,class,exit,confidence"
    assert [r.replace(",", "\t") for r in rows[1:]] == whole


def test_names_that_match_nothing_stop_with_one_line(artifact, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict.main(["--model", str(artifact), str(tmp_path / "empty")]) == 1
    assert "holds no images" in _error_line(capsys)
    assert predict.main(["--model", str(artifact), str(tmp_path / "*.png")]) == 1
    assert "matches no images" in _error_line(capsys)


def test_help_names_the_artifacts_input_size(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    text = capsys.readouterr().out
    assert "32×32" not in text and "input size" in text


def test_corrupt_artifact(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    bad = tmp_path / "cascade.pt"
    bad.write_bytes(b"not a model at all")
    assert predict.main(["--model", str(bad), str(image)]) == 1
    assert "cascade.pt is not a TorchScript cascade" in _error_line(capsys)
    assert predict.main(["--model", str(tmp_path / "gone.pt"), str(image)]) == 1
    assert "gone.pt does not exist" in _error_line(capsys)


def test_onnx_runtime_answers_as_torchscript(tiny_cascade_run, artifact, onnx_export, tmp_path,
                                             capsys):  # fmt: skip
    """--runtime onnx takes the same folders, batches, CSV and skipped images: the same
    rows (confidence to 1e-4) and exit status 2 for the unreadable image."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(0, 120, 11):
        where = folder / "sub" if i % 2 else folder
        Image.fromarray(tiny_cascade_run["images"][i].numpy()).save(where / f"test{i}.png")
    Image.fromarray(tiny_cascade_run["images"][3].numpy()).resize((70, 40)).save(
        folder / "wide.jpg"
    )
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = {}
    for runtime, model in (("torchscript", artifact), ("onnx", onnx_export["model"])):
        out = tmp_path / f"{runtime}.csv"
        argv = ["--runtime", runtime, "--model", str(model), "--batch-size", "5", "--out",
                str(out), str(folder)]  # fmt: skip
        assert predict.main(argv) == 2
        assert len([s for s in capsys.readouterr().err.splitlines() if "broken.png" in s]) == 1
        rows[runtime] = [r.split(",") for r in out.read_text().splitlines()]
    assert len(rows["onnx"]) == 13 and rows["onnx"][0] == ["path", "class", "exit", "confidence"]
    assert [r[:3] for r in rows["onnx"]] == [r[:3] for r in rows["torchscript"]]
    for a, b in zip(rows["onnx"][1:], rows["torchscript"][1:], strict=True):
        assert abs(float(a[3]) - float(b[3])) <= 1e-4
    assert predict.main(["--runtime", "onnx", "--model", str(onnx_export["model"]),
                         str(folder / "sub" / "*.png")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        r[:3] for r in rows["torchscript"] if "/sub/" in r[0]
    ]


def test_onnx_runtime_errors_are_one_line(artifact, onnx_export, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert predict.main(["--runtime", "onnx", "--model", str(artifact), str(image)]) == 1
    assert "cascade.pt carries no SHA-256" in _error_line(capsys)
    damaged = bytearray(onnx_export["model"].read_bytes())
    damaged[len(damaged) // 3] ^= 0x01
    bad = tmp_path / "cascade.onnx"
    bad.write_bytes(bytes(damaged))
    assert predict.main(["--runtime", "onnx", "--model", str(bad), str(image)]) == 1
    line = _error_line(capsys)
    assert "cascade.onnx is damaged" in line and "export_onnx" in line


def _data_offset(path, info) -> int:
    """Where an entry's bytes start in the file (after its local header)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def test_a_flipped_byte_in_any_tensor_is_refused(artifact, tmp_path, capsys):
    """Every tensor of the archive, one byte flipped at a seeded position: predict stops
    with one line before running anything; the intact file loads with torch.jit.load alone."""
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    with zipfile.ZipFile(artifact) as archive:
        tensors = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size]
    assert len(tensors) > 10
    original = artifact.read_bytes()
    rng = np.random.default_rng(0)
    for info in tensors:
        at = _data_offset(artifact, info) + int(rng.integers(info.file_size))
        damaged = bytearray(original)
        damaged[at] ^= 0x10
        bad = tmp_path / "damaged.pt"
        bad.write_bytes(bytes(damaged))
        assert predict.main(["--model", str(bad), str(image)]) == 1, info.filename
        line = _error_line(capsys)
        assert f"{bad} is damaged" in line and "export_cascade" in line
    model = torch.jit.load(str(artifact))
    assert list(model.class_names)


def test_a_pickle_posing_as_the_cascade_never_runs(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    fake = tmp_path / "cascade.pt"
    torch.save({"model": Payload(marker)}, fake)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert predict.main(["--model", str(fake), str(image)]) == 1
    assert "carries no SHA-256" in _error_line(capsys)
    assert not marker.exists()
