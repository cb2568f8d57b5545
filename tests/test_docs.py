"""What the docs quote (job counts, recipe counts, file attributes) matches real runs.

A count or an attribute name in README.md or docs/ is a claim a user plans with; these
tests recompute each one from a dry run or from the files of the tiny run.
"""

from __future__ import annotations

import re
import subprocess

import h5py
import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow, write_tiny
from test_workflow import scheduled

pytestmark = pytest.mark.slow
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def doc(name: str) -> str:
    return (ROOT / name).read_text()


def quoted(pattern: str, text: str, where: str) -> str:
    match = re.search(pattern, text, re.S)
    assert match, f"{where} no longer says {pattern!r}; update this test with the doc"
    return match.group(1)


def jobs_of(workdir, configfile: str) -> int:
    """Jobs a fresh run schedules, the `all` target (which runs nothing) left out."""
    cmd = [SNAKEMAKE, "-n", "--cores", "2", "--configfile", configfile]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sum(n for rule, n in scheduled(result.stdout).items() if rule != "all")


def as_int(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS.index(word.lower())


def test_readme_demo_counts_match_a_dry_run_of_the_demo(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    quick_start = doc("README.md").split("## Quick start")[1].split("\n## ")[0]
    recipes = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["study"]["recipes"]
    said_recipes = quoted(r"branches of\s+all (\w+) recipes", quick_start, "README quick start")
    assert as_int(said_recipes) == len(recipes)
    said_jobs = int(quoted(r"(\d+) jobs\. From a fresh clone", quick_start, "README quick start"))
    assert said_jobs == jobs_of(workdir, "config/demo.yaml")


def test_cluster_doc_counts_the_jobs_of_the_tiny_slurm_study(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"study.recipes": ["calexnet"]})  # what test_slurm.py submits
    said = int(quoted(r"That is (\d+) SLURM jobs", doc("docs/cluster.md"), "docs/cluster.md"))
    assert said == jobs_of(workdir, "tiny.yaml")


def listed_attributes(section: str) -> set[str]:
    """The backquoted names of the first 'Root attributes:' paragraph of a formats.md section."""
    text = doc("docs/formats.md").split(f"## `{section}`")[1]
    paragraph = text.split("Root attributes:")[1].split("\n\n")[0]
    names_only = re.sub(r"\([^)]*\)", "", paragraph)  # parentheses explain values
    return set(re.findall(r"`([a-z_0-9]+)`", names_only))


@pytest.mark.parametrize(
    "section, path",
    [
        ("results/{d}/prepared.h5", "results/synthetic/prepared.h5"),
        ("results/{d}/{b}/features.h5", "results/synthetic/r18tiny/features.h5"),
    ],
)
def test_formats_doc_lists_the_root_attributes_files_have(tiny_run, section, path):
    with h5py.File(tiny_run / path, "r") as f:
        actual = set(f.attrs)
    listed = listed_attributes(section)
    assert listed - actual == set(), f"docs/formats.md lists attributes {path} does not have"
    assert actual - listed == set(), f"{path} has attributes docs/formats.md does not list"
