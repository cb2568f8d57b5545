"""data/fashion_mnist_folder.py: the arrays come from the path given, never from a guessed one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
from conftest import ROOT
from PIL import Image

SCRIPT = ROOT / "data" / "fashion_mnist_folder.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fashion_mnist_folder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_npz(path):
    """Three classes; train holds labels 0,1,2,0,1 and test 2,2,0 (pixel value = position)."""
    images = lambda n: np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)  # noqa: E731
    np.savez(path, train_images=images(5), train_labels=np.array([0, 1, 2, 0, 1]),
             test_images=images(3), test_labels=np.array([2, 2, 0]),
             classes=np.array(["T-shirt/top", "Trouser", "Bag"]))  # fmt: skip
    return path


def test_writes_the_first_images_of_each_class(tmp_path):
    npz = tiny_npz(tmp_path / "fm.npz")
    out = tmp_path / "folder"
    argv = [str(out), "--npz", str(npz), "--train-per-class", "1", "--test-per-class", "5"]
    assert load_script().main(argv) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    # "/" in a class name becomes "-"; train keeps the first of each class, test all of them
    assert written == [
        "test/Bag/00000.png", "test/Bag/00001.png", "test/T-shirt-top/00002.png",
        "train/Bag/00002.png", "train/T-shirt-top/00000.png", "train/Trouser/00001.png",
    ]  # fmt: skip
    with Image.open(out / "train" / "Trouser" / "00001.png") as img:
        assert img.size == (28, 28) and img.mode == "L" and img.getpixel((3, 3)) == 1


def test_the_npz_path_is_required_and_checked(tmp_path):
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, str(SCRIPT), str(tmp_path / "out"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    missing_option = run()
    assert missing_option.returncode == 2 and "--npz" in missing_option.stderr
    absent = run("--npz", str(tmp_path / "nope.npz"))
    assert absent.returncode == 1
    assert f"--npz {tmp_path / 'nope.npz'} does not exist" in absent.stderr
    assert not (tmp_path / "out").exists()


def test_documented_commands_pass_the_npz():
    docs = [ROOT / "README.md", ROOT / "data" / "README.md", *ROOT.glob("docs/*.md"),
            *ROOT.glob("config/*.yaml")]  # fmt: skip
    commands = [
        f"{doc.relative_to(ROOT)}: {line.strip()}"
        for doc in docs
        for line in doc.read_text().splitlines()
        if "fashion_mnist_folder.py data/" in line
    ]
    assert commands and all("--npz" in line for line in commands), commands
