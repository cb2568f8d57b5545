"""Shared fixtures: a finished tiny run of the whole workflow, made once per session."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "workflow_config.yaml",
    "config",
    "calex_steps",
    "profiles",
    "envs",
    "reports",
)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of small tensors: on a shared 2-core machine a second
    thread only adds contention (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The smallest study that still exercises every stage (about a minute on 2 cores).
TINY = {
    "device": "cpu",
    "study": {
        "datasets": ["synthetic"],
        "backbones": ["r18tiny"],
        "recipes": ["calexnet", "noalign"],
        "seeds": [0],
    },
    "datasets": {
        "synthetic": {
            "source": "synthetic",
            "n_train": 1600,
            "n_val": 600,
            "n_test": 600,
            "num_coarse": 4,
            "fine_per_coarse": 2,
            "seed": 0,
        }
    },
    "backbones": {
        "r18tiny": {
            "arch": "resnet18",
            "width": 0.125,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        }
    },
    "pretrain": {"epochs": 5},
    "probe": {"epochs": 5},
    "training": {"cls_epochs": 4, "conf_epochs": 4, "batch_size": 256},
    "latency": {"warmup": 2, "timed": 8, "batch_sizes": [1, 64]},
}


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow (code included), so tests may edit it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` with the tiny overlay config; capture its output."""
    cmd = [SNAKEMAKE, "--cores", "2", *args, "--configfile", "tiny.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def write_tiny(workdir: Path, overrides: dict | None = None) -> None:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    for path, value in (overrides or {}).items():
        node = config
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run; tests that change it must work on their own copy."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_run"))
    write_tiny(workdir)
    result = snakemake(workdir)
    if result.returncode != 0:
        logs = "\n".join(p.read_text()[-3000:] for p in sorted(workdir.glob("logs/**/*.log")))
        pytest.fail(f"tiny workflow failed:\n{result.stderr[-6000:]}\n{logs}")
    return workdir


def clone_run(src: Path, dest: Path) -> Path:
    """Copy a finished run, keeping file times, so Snakemake sees it as finished."""
    shutil.copytree(src, dest, symlinks=True, copy_function=shutil.copy2)
    return dest


@pytest.fixture(scope="session")
def tiny_cascade_run(tmp_path_factory) -> dict:
    """A real tiny run made by calling the stage functions (no Snakemake): its run folder,
    prepared file, test images and backbone folder."""
    from helpers import make_tiny_cascade_run

    return make_tiny_cascade_run(tmp_path_factory.mktemp("cascade"))


@pytest.fixture(scope="session")
def every_form_cache(tiny_cascade_run, tmp_path_factory) -> Path:
    """The tiny run's backbone cached with every head form at every exit of
    ``helpers.HEAD_EXITS`` (blocks the default attach points do not name)."""
    from helpers import make_every_form_cache

    return make_every_form_cache(tiny_cascade_run, tmp_path_factory.mktemp("forms"))


@pytest.fixture(scope="session")
def onnx_export(tiny_cascade_run, tmp_path_factory) -> dict:
    """The tiny run's cascade at margin 0.05 exported by stage export_onnx (once: the
    export takes tens of seconds): model and sidecar paths, and the sidecar."""
    from calex_steps.stages.export_onnx import run_export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    model, sidecar = folder / "cascade_m0.05.onnx", folder / "cascade_m0.05.json"
    meta = run_export_onnx(tiny_cascade_run["run"], None, None, None, 0.05,
                           tiny_cascade_run["prepared"], model, sidecar)  # fmt: skip
    return {"model": model, "sidecar": sidecar, "meta": meta}
