"""The workflow runs through a real SLURM with profiles/slurm (docs/cluster.md).

The end-to-end test needs a running cluster (``bash ci/slurm/start_slurm.sh``);
it skips when there is none, or fails instead when CALEX_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, copy_workflow, write_tiny

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = "profiles/slurm"
# Every rule of the tiny study that runs as a SLURM job (``all`` runs nothing).
SLURM_RULES = (
    "prepare_dataset",
    "pretrain_backbone",
    "probe_coarse",
    "cache_features",
    "train_branch",
    "measure_segments",
    "sweep_margins",
    "export_cascade",
    "measure_latency",
    "make_tables",
    "plot_pareto",
    "plot_ablation",
    "plot_calibration",
    "plot_shift",
    "plot_flow",
    "plot_exemplars",
    "write_summary",
    "write_claims",
)
RUN_LIMIT_S = 1500  # 18 jobs of the tiny study: about 3 minutes on 2 cores
# Read by Snakemake when it records a finished job's metadata (the rules' conda:).
EXTRA_FILES = ("envs",)
SWEEP = Path("results/synthetic/r18tiny/calexnet/seed0/split0/sweep.csv")


def required() -> bool:
    """True when CI demands the cluster (a missing one is then a failure, not a skip)."""
    return os.environ.get("CALEX_REQUIRE_SLURM") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, or fail with it when CALEX_REQUIRE_SLURM=1."""
    if required():
        pytest.fail(f"CALEX_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def cluster_problem() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when its node is usable."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (start one with: bash ci/slurm/start_slurm.sh)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (is slurmctld running?)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mixed", "allocated")) for s in states):
        detail = (out.stderr.strip().splitlines() or states or ["no node"])[-1]
        return f"no SLURM node is up ({detail}); start one with: bash ci/slurm/start_slurm.sh"
    return None


def copy_study(dest: Path) -> Path:
    """A private copy of the workflow, with the tiny one-recipe config as tiny.yaml."""
    workdir = copy_workflow(dest)
    for extra in EXTRA_FILES:
        if not (workdir / extra).exists():
            shutil.copytree(ROOT / extra, workdir / extra)
    write_tiny(workdir, {"study.recipes": ["calexnet"]})
    return workdir


def slurm_job_logs(workdir: Path) -> dict[str, list[Path]]:
    """Rule name -> the plugin's per-job SLURM logs (``<slurm job id>.log``) for it."""
    logs: dict[str, list[Path]] = {}
    root = workdir / ".snakemake" / "slurm_logs"
    for log in sorted(root.glob("rule_*/**/*.log")):
        rule = log.relative_to(root).parts[0].removeprefix("rule_")
        if re.fullmatch(r"\d+\.log", log.name):
            logs.setdefault(rule, []).append(log)
    return logs


def dry_run(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``snakemake -n`` of the tiny study with the SLURM workflow profile."""
    cmd = [SNAKEMAKE, "-n", "--workflow-profile", PROFILE, "--configfile", "tiny.yaml"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def test_profile_takes_account_and_partition_from_env(tmp_path):
    # A dry run needs the plugin but no SLURM tools or daemons.
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        skip_or_fail("snakemake-executor-plugin-slurm missing: pip install -e '.[slurm]'")
    workdir = copy_study(tmp_path / "wf")
    env = {**os.environ, "CALEX_SLURM_ACCOUNT": "proj42", "CALEX_SLURM_PARTITION": "gpu_a100"}
    result = dry_run(workdir, env)
    assert result.returncode == 0, result.stderr[-3000:]
    pretrain = result.stdout.split("rule pretrain_backbone:")[1].split("\n\n")[0]
    assert "slurm_account=proj42" in pretrain
    assert "slurm_partition=gpu_a100" in pretrain
    # device: cpu in the tiny config: the torch rules must not ask SLURM for a GPU.
    assert re.search(r"\bgpu=0\b", pretrain)


def test_profile_status_checks_fit_min_job_age():
    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    start = (ROOT / "ci" / "slurm" / "start_slurm.sh").read_text()
    min_job_age = int(re.search(r"^MIN_JOB_AGE=(\d+)$", start, re.M).group(1))
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    # The plugin silently falls back to sacct (which hangs without accounting)
    # unless MinJobAge >= 3 x the initial status-check delay.
    assert 3 * profile["slurm-init-seconds-before-status-checks"] <= min_job_age


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_study_runs_through_slurm(tmp_path):
    problem = cluster_problem()
    if problem:
        skip_or_fail(problem)
    workdir = copy_study(tmp_path / "wf")
    cmd = [SNAKEMAKE, "--workflow-profile", PROFILE, "--configfile", "tiny.yaml"]
    # timeout -k: a Snakemake that lost track of its jobs ignores SIGTERM.
    wrapped = ["timeout", "-k", "10", str(RUN_LIMIT_S), *cmd]
    result = subprocess.run(wrapped, cwd=workdir, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 124, f"snakemake hung past {RUN_LIMIT_S}s:\n{output[-3000:]}"
    assert result.returncode == 0, output[-3000:]

    table = pd.read_csv(workdir / SWEEP)
    margins = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())["sweep"]["margins"]
    assert len(table) == len(margins)

    logs = slurm_job_logs(workdir)
    assert sorted(logs) == sorted(SLURM_RULES), output[-3000:]
    assert len(logs["train_branch"]) == 3  # one SLURM job per branch
    for rule, files in logs.items():
        for log in files:
            assert "1 of 1 steps (100%) done" in log.read_text(), f"{rule}: {log}"
    # SLURM itself still lists the last job (MinJobAge keeps it for 300 s).
    last = logs["sweep_margins"][0].stem
    state = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", last, "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert state.stdout.strip() == "COMPLETED", state.stdout + state.stderr
