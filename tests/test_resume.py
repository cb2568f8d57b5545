"""Resume after a crash: a Snakemake run killed in the middle of pretraining continues
from the last completed epoch and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import SNAKEMAKE, copy_workflow, snakemake, write_tiny

pytestmark = pytest.mark.slow
TARGET = "results/synthetic/r18tiny/backbone.pt"
LOG = "logs/pretrain_backbone/synthetic/r18tiny.log"
SETTINGS = {"pretrain.epochs": 6, "datasets.synthetic.n_train": 600}


def kill_at_epoch(workdir, epoch: int, limit: float = 600) -> None:
    """Start the run, SIGKILL Snakemake and its job once ``epoch`` is logged as done."""
    proc = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", TARGET, "--configfile", "tiny.yaml"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = workdir / LOG
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            if log.exists() and f"epoch {epoch}/6" in log.read_text():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be interrupted")
            time.sleep(0.05)
        pytest.fail("pretraining did not reach the epoch in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_killed_pretraining_resumes_to_the_same_weights(tmp_path):
    straight = copy_workflow(tmp_path / "straight")
    write_tiny(straight, SETTINGS)
    assert snakemake(straight, TARGET).returncode == 0

    crashed = copy_workflow(tmp_path / "crashed")
    write_tiny(crashed, SETTINGS)
    kill_at_epoch(crashed, 2)
    assert not (crashed / TARGET).exists()
    assert (crashed / (TARGET + ".scratch")).exists()
    # a killed Snakemake leaves its lock behind: the documented first step is --unlock
    assert snakemake(crashed, "--unlock").returncode == 0
    result = snakemake(crashed, TARGET)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (crashed / LOG).read_text()
    assert "resuming from the scratch checkpoint after epoch" in log
    assert "epoch 1/6" not in log  # the new log starts after the resumed epoch

    a = torch.load(straight / TARGET, weights_only=True)["state_dict"]
    b = torch.load(crashed / TARGET, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (crashed / (TARGET + ".scratch")).exists()
