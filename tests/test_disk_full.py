"""A full disk during any large write is one `calex error:` line naming the file system,
exit 1, no temporary file left, the earlier output byte for byte as it was
(docs/bad-input.md).

The small disk is a 2 MB tmpfs when this process may mount one (root, as in CI), else
a folder whose writes are capped at the same size with RLIMIT_FSIZE (the process's
file size limit, which fails a write as a full disk does, with EFBIG). Each failing
stage runs as a command in a subprocess, as Snakemake runs it; the check that refuses
an output before writing is switched off there, so that the write itself fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from helpers import RECIPE
from PIL import Image

from calex_steps.errors import CalexError
from calex_steps.stages import train_branch
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.stages.prepare_dataset import run_prepare_dataset

SIZE = 2 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import importlib, sys
module, skip = sys.argv[1], sys.argv[2]
for target in filter(None, skip.split(",")):
    owner, name = target.rsplit(".", 1)
    setattr(importlib.import_module(owner), name, lambda *args, **kwargs: None)
sys.argv = [module, *sys.argv[3:]]
raise SystemExit(importlib.import_module(module).main())
"""
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING) ")


class SmallDisk:
    """Where the outputs go, and how a run gets only ``room`` bytes to write."""

    def __init__(self, folder: Path, mounted: bool) -> None:
        self.folder, self.mounted = folder, mounted

    def run(self, module: str, argv: list[str], room: int, skip: tuple[str, ...] = ()):
        """``python -m module argv`` with ``room`` bytes left; the checks ``skip`` off."""
        filler = self.folder / ".filler"
        limit = None
        if self.mounted:
            free = shutil.disk_usage(self.folder).free
            filler.write_bytes(b"\0" * max(0, free - room))
        else:

            def limit():
                import resource

                resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        try:
            return subprocess.run(
                [sys.executable, "-c", DRIVER, module, ",".join(skip), *argv],
                capture_output=True, text=True, env=env, preexec_fn=limit, timeout=300,
            )  # fmt: skip
        finally:
            filler.unlink(missing_ok=True)

    def describes_itself(self, line: str) -> bool:
        """Whether the error line names this disk: its mount point, or the size limit."""
        if self.mounted:
            return f"no space left on the file system mounted at {self.folder}" in line
        return "the file size limit of this process (ulimit -f" in line


def _mount_tmpfs(folder: Path) -> bool:
    """Mount the 2 MB tmpfs; False where this process may not (set CALEX_TEST_SMALL_DISK=rlimit
    to try the file size limit where it could)."""
    if os.environ.get("CALEX_TEST_SMALL_DISK") == "rlimit":
        return False
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    if not hasattr(os, "fork"):
        pytest.skip("neither a small file system nor a file size limit on this platform")
    folder = tmp_path_factory.mktemp("small_disk")
    mounted = _mount_tmpfs(folder)
    yield SmallDisk(folder, mounted)
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)


def assert_one_line_and_nothing_left(result, disk: SmallDisk, earlier: dict[Path, bytes]):
    assert result.returncode == 1, result.stderr[-3000:]
    other = [s for s in result.stderr.splitlines() if s.strip() and not LOG_LINE.match(s)]
    assert len(other) == 1 and other[0].startswith("calex error: "), result.stderr[-3000:]
    assert disk.describes_itself(other[0]), other[0]
    assert "the earlier file is kept" in other[0] or "nothing was written" in other[0]
    for path, content in earlier.items():
        assert path.read_bytes() == content, f"{path} changed"
    assert not [p.name for p in disk.folder.rglob("*.tmp-*")]


def image_folder(root: Path, per_class: int) -> dict:
    """A two-class image folder of random 32×32 PNGs (train and test)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return {"source": "image_folder", "root": str(root), "val_from": "train", "val_size": 20}


def test_preparing_an_image_folder(small_disk, tmp_path):
    settings = image_folder(tmp_path / "images", per_class=150)
    out = small_disk.folder / "prepare" / "prepared.h5"
    run_prepare_dataset("folder", dict(settings, image_size=8), out)  # the earlier output
    earlier = {out: out.read_bytes()}
    argv = ["--dataset", "folder", "--settings", json.dumps(dict(settings, image_size=48)),
            "--out", str(out)]  # fmt: skip
    # 600 images at 48×48: 4.1 MB, written chunk by chunk until the disk is full
    result = small_disk.run("calex_steps.stages.prepare_dataset", argv, room=600_000,
                            skip=("calex_steps.data.prepared.require_space",))  # fmt: skip
    assert_one_line_and_nothing_left(result, small_disk, earlier)


def test_caching_features(small_disk, tiny_cascade_run):
    bb = tiny_cascade_run["root"]
    out = small_disk.folder / "cache" / "features.h5"
    small = {"batch_size": 128, "compact": "float16"}
    run_cache_features(tiny_cascade_run["prepared"], bb / "backbone.pt", bb / "probe.pt",
                       ["layer3"], small, "cpu", out)  # fmt: skip
    earlier = {out: out.read_bytes()}
    argv = ["--data", str(tiny_cascade_run["prepared"]), "--backbone", str(bb / "backbone.pt"),
            "--probe", str(bb / "probe.pt"), "--attach", '["layer1", "layer2", "layer3"]',
            "--settings", '{"batch_size": 128}', "--device", "cpu", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    check = "calex_steps.stages.cache_features.check_cache_fits"
    result = small_disk.run("calex_steps.stages.cache_features", argv, 300_000, skip=(check,))
    assert_one_line_and_nothing_left(result, small_disk, earlier)


def _branch_argv(tiny_cascade_run, run: Path) -> list[str]:
    bb = tiny_cascade_run["root"]
    return ["--features", str(bb / "features.h5"), "--branch", "1", "--recipe", "calexnet",
            "--settings", json.dumps(RECIPE), "--seed", "0", "--device", "cpu",
            "--threads", "1", "--out-head", str(run / "branch1.pt"),
            "--out-outputs", str(run / "branch1.npz")]  # fmt: skip


def test_training_a_branch(small_disk, tiny_cascade_run):
    run = small_disk.folder / "calexnet" / "seed0"
    run.mkdir(parents=True)
    earlier = {}
    for name in ("branch1.pt", "branch1.npz"):
        shutil.copy(tiny_cascade_run["run"] / name, run / name)
        earlier[run / name] = (run / name).read_bytes()
    argv = _branch_argv(tiny_cascade_run, run)
    check = "calex_steps.stages.train_branch.require_space"
    result = small_disk.run("calex_steps.stages.train_branch", argv, 8_000, skip=(check,))
    assert_one_line_and_nothing_left(result, small_disk, earlier)
    left = {p.name for p in run.iterdir()} - {"branch1.pt.scratch"}  # a rerun resumes from it
    assert left == {"branch1.npz", "branch1.pt"}


def test_sweeping_the_margins(small_disk, tiny_cascade_run):
    split = small_disk.folder / "sweep" / "split0"
    shutil.copytree(tiny_cascade_run["split"], split)
    earlier = {p: p.read_bytes() for p in split.iterdir()}
    run, bb = tiny_cascade_run["run"], tiny_cascade_run["root"]
    settings = {"margins": [0.01, 0.05, 0.1, 0.2, 0.4, 0.8], "calibration": "cascade"}
    argv = ["--features", str(bb / "features.h5"),
            "--branches", *(str(run / f"branch{b}.npz") for b in (1, 2, 3)),
            "--settings", json.dumps(settings), "--out-table", str(split / "sweep.csv"),
            "--out-thresholds", str(split / "thresholds.npz"),
            "--out-exits", str(split / "exits.npz"),
            "--out-per-class", str(split / "per_class.csv")]  # fmt: skip
    result = small_disk.run("calex_steps.stages.sweep_margins", argv, room=2_000)
    assert_one_line_and_nothing_left(result, small_disk, earlier)


Usage = namedtuple("Usage", "total used free")


def test_outputs_that_cannot_fit_are_refused_before_any_work(tmp_path, tiny_cascade_run,
                                                             monkeypatch, capsys):  # fmt: skip
    """prepared.h5 and the branch files are measured against the free space first."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 50_000, 50_000))
    settings = image_folder(tmp_path / "images", per_class=40)  # 160 images: 2.0 MB at 64×64
    with pytest.raises(CalexError) as err:
        run_prepare_dataset("folder", dict(settings, image_size=64), tmp_path / "prepared.h5")
    message = str(err.value)
    assert "writing the prepared file" in message and "needs about 2.0 MB" in message
    assert "the file system mounted at" in message and "nothing was written" in message
    assert not list(tmp_path.glob("prepared.h5*"))
    synthetic = {"source": "synthetic", "n_train": 2000, "n_val": 20, "n_test": 20,
                 "num_coarse": 2, "fine_per_coarse": 2, "seed": 0}  # fmt: skip
    with pytest.raises(CalexError, match=r"writing the prepared file .* needs about 6\.4 MB"):
        run_prepare_dataset("synthetic", synthetic, tmp_path / "prepared.h5")

    run = tmp_path / "run"
    assert train_branch.main(_branch_argv(tiny_cascade_run, run)) == 1
    line = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error")]
    assert len(line) == 1 and "writing the branch files" in line[0]
    assert not run.exists() or not list(run.iterdir())
