"""Reruns follow the code's own imports: editing a module reruns exactly the rules whose
stage imports it; editing plumbing (logging, argument parsing) reruns nothing."""

from __future__ import annotations

import pytest
from conftest import clone_run, snakemake
from test_workflow import scheduled

pytestmark = pytest.mark.slow


def edit(path):
    path.write_text(path.read_text() + "\n# an edit\n")


@pytest.mark.parametrize(
    ("module", "importers"),
    [
        # the FR interpolation: every stage that reads a curve at fixed FRs
        ("reporting/curves.py", {"make_tables", "plot_ablation", "write_summary", "write_claims"}),
        # the latency tables: read only by measure_latency
        ("reporting/latency.py", {"measure_latency"}),
    ],
)
def test_library_edit_reruns_exactly_its_importers(tiny_run, tmp_path, module, importers):
    run = clone_run(tiny_run, tmp_path / "run")
    edit(run / "calex_steps" / module)
    jobs = scheduled(snakemake(run, "-n").stdout)
    # docs/running.md, "What reruns when"; nothing upstream (no training, no sweep)
    assert set(jobs) - {"all"} == importers


def test_logging_helper_edit_reruns_nothing(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    edit(run / "calex_steps" / "cli.py")  # logging and argument plumbing
    edit(run / "calex_steps" / "io.py")  # atomic writes
    result = snakemake(run, "-n")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr
