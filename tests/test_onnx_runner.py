"""The ONNX runner alone: a copy of the one file, in a process that cannot import torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from calex_steps.data.image_folder import decode_file
from calex_steps.deploy import onnx_runner
from calex_steps.deploy.build import save_model
from calex_steps.deploy.onnx_runner import SHA_KEY, OnnxCascade, RunnerError

NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "calex_steps"):
            raise ImportError(f"{name} cannot be imported here")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def images(tiny_cascade_run, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(0, 120, 7):
        paths.append(str(folder / f"test{i}.png"))
        Image.fromarray(tiny_cascade_run["images"][i].numpy()).save(paths[-1])
    return paths


def test_copied_runner_classifies_without_torch(tiny_cascade_run, onnx_export, images, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TORCH)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(onnx_runner.__file__, alone / "onnx_runner.py")
    shutil.copy(onnx_export["model"], alone / "cascade.onnx")
    probe = [sys.executable, "-c", "import torch"]
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
    assert subprocess.run(probe, env=env, capture_output=True).returncode != 0  # blocked
    cmd = [sys.executable, "onnx_runner.py", "--model", "cascade.onnx", *images]
    result = subprocess.run(cmd, env=env, cwd=alone, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    exits = np.load(tiny_cascade_run["split"] / "exits.npz")
    row = list(exits["margins"]).index(0.05)
    lines = result.stdout.splitlines()
    assert len(lines) == len(images)
    for line, path in zip(lines, images, strict=True):
        i = int(path.rsplit("test", 1)[1].split(".")[0])
        where = exits["exit_branch"][row][i]
        assert line.split("\t")[:3] == [
            path, f"coarse{exits['final_pred'][row][i]}",
            "backbone" if where == 3 else f"branch {where + 1}",
        ]  # fmt: skip


def test_arrays_in_answers_out(tiny_cascade_run, onnx_export):
    cascade = OnnxCascade(onnx_export["model"], threads=1)
    pred, exit_branch, conf = cascade(tiny_cascade_run["images"][:5].numpy())
    assert pred.dtype == exit_branch.dtype == np.int64 and conf.dtype == np.float32
    assert cascade.class_names == [f"coarse{i}" for i in range(4)] and cascade.num_branches == 3
    with pytest.raises(RunnerError, match="images must be uint8 N×32×32×3"):
        cascade(tiny_cascade_run["images"][:5].numpy().astype(np.float32))


def test_one_line_errors(onnx_export, images, tmp_path, capsys):
    assert onnx_runner.main(["--model", str(tmp_path / "none.onnx"), images[0]]) == 1
    assert "none.onnx does not exist" in capsys.readouterr().err
    bare = tmp_path / "bare.onnx"  # a sealed ONNX model without calex's metadata
    model = onnx.load(str(onnx_export["model"]))
    del model.metadata_props[:]
    save_model(model, bare)
    assert onnx_runner.main(["--model", str(bare), images[0]]) == 1
    assert "not a calex cascade" in capsys.readouterr().err
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert onnx_runner.main(["--model", str(onnx_export["model"]), str(text)]) == 1
    assert "notes.png is not a readable image" in capsys.readouterr().err


def test_a_flipped_byte_anywhere_is_refused_before_onnx_runtime_reads_it(onnx_export, tmp_path):
    """One byte flipped at seeded positions of every weight, and in the graph and metadata:
    each copy is refused with one line naming the file."""
    original = onnx_export["model"].read_bytes()
    model = onnx.load_from_string(original)
    at = [original.find(init.raw_data) for init in model.graph.initializer if init.raw_data]
    at = [a for a in at if a >= 0]
    assert len(at) > 10
    rng = np.random.default_rng(0)
    spots = [a + int(rng.integers(16)) for a in at] + [100, len(original) // 2, len(original) - 5]
    bad = tmp_path / "damaged.onnx"
    for spot in spots:
        damaged = bytearray(original)
        damaged[spot] ^= 0x10
        bad.write_bytes(bytes(damaged))
        with pytest.raises(RunnerError, match="damaged.onnx (is damaged|carries no SHA-256)"):
            OnnxCascade(bad)
    unsealed = tmp_path / "unsealed.onnx"  # its digest dropped, written by onnx.save
    props = {p.key: p.value for p in model.metadata_props if p.key != SHA_KEY}
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(unsealed))
    with pytest.raises(RunnerError, match=f"unsealed.onnx carries no SHA-256 \\({SHA_KEY}\\)"):
        OnnxCascade(unsealed)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ("{not json", "has unreadable calex metadata"),
        ('{"class_names": [], "num_branches": 3, "input_size": 32}', "lacks a list of class_names"),
        ('{"class_names": ["a"], "num_branches": "3", "input_size": 32}', "num_branches '3'"),
        ('{"class_names": ["a"], "num_branches": 3, "input_size": 0}', "input_size 0, not a count"),
    ],
)  # fmt: skip
def test_sealed_models_with_bad_metadata_are_refused(onnx_export, tmp_path, meta, expected):
    model = onnx.load(str(onnx_export["model"]))
    onnx.helper.set_model_props(model, {"calex": meta})
    path = tmp_path / "odd.onnx"
    save_model(model, path)
    with pytest.raises(RunnerError, match=expected):
        OnnxCascade(path)


def test_images_are_decoded_as_calex_decodes_them(tmp_path):
    """Any size and mode: shorter side resized, centre square kept, as prepare_dataset."""
    rng = np.random.default_rng(0)
    files = {
        "wide.png": Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)),
        "tall.jpg": Image.fromarray(rng.integers(0, 256, (77, 31, 3), dtype=np.uint8)),
        "grey16.png": Image.fromarray(rng.integers(0, 65535, (50, 50), dtype=np.uint16)),
        "palette.gif": Image.fromarray(rng.integers(0, 256, (20, 45), dtype=np.uint8)).convert("P"),
    }  # fmt: skip
    for name, image in files.items():
        image.save(tmp_path / name)
        found = onnx_runner.read_image(tmp_path / name, 32)
        assert found.shape == (32, 32, 3) and found.dtype == np.uint8
        np.testing.assert_array_equal(found, decode_file(str(tmp_path / name), 32, 32))
