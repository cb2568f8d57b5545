"""Reruns follow the code's own imports: editing a module reruns exactly the rules whose
stage imports it; editing plumbing (logging, argument parsing) reruns nothing."""

from __future__ import annotations

import pytest
from conftest import clone_run, snakemake
from test_workflow import scheduled

pytestmark = pytest.mark.slow


def edit(path):
    path.write_text(path.read_text() + "\n# an edit\n")


def test_interpolation_edit_reruns_the_latency_tables(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    edit(run / "calex_steps" / "reporting" / "curves.py")  # the FR interpolation
    jobs = scheduled(snakemake(run, "-n").stdout)
    assert jobs.get("measure_latency") == 1 and jobs.get("make_tables") == 1
    # exactly the stages whose imports reach curves.py (the README's "What reruns when")
    importers = {"measure_latency", "make_tables", "plot_ablation", "write_summary", "write_claims"}
    assert set(jobs) - {"all"} == importers


def test_logging_helper_edit_reruns_nothing(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    edit(run / "calex_steps" / "cli.py")  # logging and argument plumbing
    edit(run / "calex_steps" / "io.py")  # atomic writes
    result = snakemake(run, "-n")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr
