"""The sweep in the workflow: a recalibrated or borrowed-branch recipe reruns only sweeps,
and new splits retrain only where the training data changes (``snakemake -n``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import clone_run, copy_workflow, snakemake, write_tiny
from test_workflow import scheduled

pytestmark = pytest.mark.slow
RUN = "results/synthetic/r18tiny"


def test_a_new_calibration_target_reruns_only_the_sweeps(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"recipes.calexnet.calibration_target": "matched"})
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("sweep_margins") == 1
    for rule in ("train_branch", "cache_features", "pretrain_backbone", "prepare_dataset"):
        assert rule not in jobs


def test_recipes_with_borrowed_branches_only_sweep(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    write_tiny(run, {"study.recipes": ["calexnet", "noalign", "calexnet_agree", "msp_global"]})
    targets = [f"{RUN}/{r}/seed0/split0/frontier.csv" for r in ("calexnet_agree", "msp_global")]
    assert scheduled(snakemake(run, "-n", *targets).stdout) == {"sweep_margins": 2}
    result = snakemake(run, *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / RUN / "msp_global" / "seed0" / "branch1.npz").exists()
    frontier = pd.read_csv(run / RUN / "msp_global" / "seed0" / "split0" / "frontier.csv")
    assert len(frontier) == 56 and frontier["fr"].is_monotonic_increasing
    with np.load(run / RUN / "msp_global" / "seed0" / "split0" / "thresholds.npz") as thr:
        np.testing.assert_allclose(thr["m0.2"], 0.8)  # t = (1 - m) * 1 for every class
    log = run / "logs/sweep_margins/synthetic/r18tiny/calexnet_agree/seed0/split0.log"
    assert f"{RUN}/calexnet/seed0/branch1.npz" in log.read_text()  # calexnet's own files


def fake_finished_run(workdir, targets) -> None:
    """Empty files for every output the targets need, then ``--touch`` puts their times in
    order: Snakemake sees a finished run without anything being computed."""
    dry = snakemake(workdir, "-n", *targets)
    assert dry.returncode == 0, dry.stderr[-3000:]
    for line in dry.stdout.splitlines():
        if line.startswith("    output: "):
            for name in line.removeprefix("    output: ").split(", "):
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).touch()
    assert snakemake(workdir, "--touch", *targets).returncode == 0


def test_new_splits_retrain_only_datasets_whose_training_data_they_change(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    root = workdir / "data" / "c10"
    root.mkdir(parents=True)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch", "batches.meta"]:
        (root / name).touch()  # the sources are only looked at; nothing reads them here
    # Validation carved from train: each split is a new carve, trained anew.
    c10 = {"source": "cifar10", "root": "data/c10", "val_from": "train", "val_size": 500}
    overrides = {"study.datasets": ["c10"], "study.recipes": ["noalign", "msp_global"],
                 "datasets": {"c10": c10}}  # fmt: skip

    def sweeps(splits):
        return [f"results/c10/r18tiny/{r}/seed0/split{k}/sweep.csv"
                for r in ("noalign", "msp_global") for k in range(splits)]  # fmt: skip

    write_tiny(workdir, overrides)
    fake_finished_run(workdir, sweeps(1))
    write_tiny(workdir, overrides | {"study.splits": 6})
    jobs = scheduled(snakemake(workdir, "-n", *sweeps(6)).stdout)
    # Five new carves (c10-split1..5): each prepares, pretrains, caches and trains noalign's
    # three branches; msp_global sweeps them without training. Nothing of split 0 reruns.
    assert jobs == {"prepare_dataset": 5, "pretrain_backbone": 5, "cache_features": 5,
                    "train_branch": 15, "sweep_margins": 10}  # fmt: skip
