"""End to end: the tiny workflow runs, is complete, and reruns only what is stale."""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import clone_run, copy_workflow, snakemake, write_tiny

pytestmark = pytest.mark.slow


def scheduled(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the job-stats table of ``snakemake -n``."""
    counts = {}
    for line in dry_run_output.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) not in ("total", "job", "count"):
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_tiny_run_writes_every_stage(tiny_run):
    run = tiny_run / "results" / "synthetic" / "r18tiny"
    with h5py.File(run / "features.h5", "r") as f:
        # width 0.125: every attach point stores the (smaller) Gram form
        assert [f["train"][f"feat{b}"].attrs["kind"] for b in (1, 2, 3)] == ["gram"] * 3
        assert f["test"]["logits"].shape == (600, 4)
    for recipe in ("calexnet", "noalign"):
        table = pd.read_csv(run / recipe / "seed0" / "split0" / "sweep.csv")
        assert len(table) == 8
        assert table["fr"].between(-1, 1).all()
    for log in ("pretrain_backbone/synthetic/r18tiny.log", "probe_coarse/synthetic/r18tiny.log"):
        assert "epoch 2/" in (tiny_run / "logs" / log).read_text()


def test_sweep_traces_a_real_trade_off(tiny_run):
    run = tiny_run / "results" / "synthetic" / "r18tiny"
    table = pd.read_csv(run / "noalign" / "seed0" / "split0" / "sweep.csv")  # calibration: full
    # with full calibration a larger margin only lowers thresholds: FR never decreases
    assert (table["fr"].diff().dropna() >= 0).all()
    assert table["fr"].iloc[-1] > table["fr"].iloc[0] + 0.1
    # ... and the compute saved is paid in accuracy
    assert table["accuracy"].iloc[-1] < table["accuracy"].iloc[0]
    backbone = table["backbone_accuracy"].iloc[0]
    labels = np.load(run / "noalign" / "seed0" / "split0" / "exits.npz")["labels"]
    branch1 = np.load(run / "noalign" / "seed0" / "branch1.npz")["test_pred"]
    assert (branch1 == labels).mean() < backbone - 0.05  # branch 1 alone is clearly worse


def test_finished_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "-n")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_probe_edit_reruns_probe_not_pretraining(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"probe.lr": 0.02})
    result = snakemake(run, "-n")
    jobs = scheduled(result.stdout)
    assert jobs.get("probe_coarse") == 1 and jobs.get("cache_features") == 1
    assert "pretrain_backbone" not in jobs and "prepare_dataset" not in jobs


def test_kd_temperature_edit_reruns_kd_recipes_only(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"training.kd_temperature": 2.0})
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("train_branch") == 3  # calexnet's three branches; noalign uses no KD
    assert jobs.get("sweep_margins") == 1
    for rule in ("pretrain_backbone", "probe_coarse", "cache_features", "prepare_dataset"):
        assert rule not in jobs


def test_misspelt_key_stops_with_one_line(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"training.kd_temprature": 2.0})
    result = snakemake(workdir, "-n")
    assert result.returncode != 0
    lines = [s for s in result.stderr.splitlines() if "training.kd_temprature" in s]
    assert len(lines) == 1 and "allowed keys" in lines[0]


def test_missing_dataset_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"study.datasets": ["cinic10"]})
    result = snakemake(workdir)
    assert result.returncode != 0
    assert "data/cinic10" in result.stderr
    assert not (workdir / "results").exists() or not any((workdir / "results").iterdir())


def test_margin_edit_reruns_sweeps_only(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"sweep.margins": [0.05, 0.1, 0.2]})
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("sweep_margins") == 2
    assert "train_branch" not in jobs and "cache_features" not in jobs


def test_code_edit_reruns_that_step(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    module = run / "calex_steps" / "stages" / "sweep_margins.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("sweep_margins") == 2
    assert "train_branch" not in jobs and "pretrain_backbone" not in jobs


def test_new_seed_retrains_its_branches_together(tiny_run, tmp_path):
    # One train_branch job trains every seed of a branch: a new seed reruns the three branch
    # jobs of both recipes (each now writes both seeds' files), and so both seeds' sweeps.
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"study.seeds": [0, 1]})
    result = snakemake(run, "-n")
    jobs = scheduled(result.stdout)
    assert jobs.get("train_branch") == 6 and jobs.get("sweep_margins") == 4
    assert "seed1/branch3.npz" in result.stdout and "--seed 0 1" in result.stdout
    assert "cache_features" not in jobs and "pretrain_backbone" not in jobs


def test_backbone_is_left_read_only(tiny_run):
    """backbone.pt is protected(): Snakemake removes its write permission after making it."""
    backbone = tiny_run / "results" / "synthetic" / "r18tiny" / "backbone.pt"
    assert backbone.is_file() and backbone.stat().st_mode & 0o222 == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files: needs another user")
def test_full_rerun_refuses_to_overwrite_the_backbone(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    result = snakemake(run, "-n", "--forceall")
    assert result.returncode != 0
    assert "protected" in (result.stdout + result.stderr).lower()


def test_attach_point_edit_recaches_without_retraining_the_backbone(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"backbones.r18tiny.attach_points": ["layer1", "layer2", "layer4"]})
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("cache_features") == 1 and jobs.get("train_branch") == 6
    assert "pretrain_backbone" not in jobs and "probe_coarse" not in jobs


def test_missing_user_checkpoint_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"backbones.r18tiny.checkpoint": "weights/missing.th"})
    result = snakemake(workdir, "-n")
    assert result.returncode != 0
    line = [s for s in result.stderr.splitlines() if "backbones.r18tiny.checkpoint" in s]
    assert len(line) == 1 and "weights/missing.th" in line[0] and "does not exist" in line[0]


def test_more_splits_resweep_without_retraining(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"study.splits": 3})
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("sweep_margins") == 4  # splits 1 and 2 of calexnet and noalign
    for rule in ("train_branch", "cache_features", "pretrain_backbone", "export_cascade"):
        assert rule not in jobs
