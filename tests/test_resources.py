"""The resource estimates: the rules ask what they say, the paper's study fits one GPU box,
memory is bounded by the batch, and the table in docs/running.md is the generated one."""

from __future__ import annotations

import re
import subprocess

import h5py
import pytest
import torch
from conftest import ROOT, SNAKEMAKE, copy_workflow
from helpers import write_synthetic_prepared

from calex_steps.data.feature_cache import form_dataset
from calex_steps.models.backbones import build_backbone
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.workflow import resource_table
from calex_steps.workflow import resources as r
from calex_steps.workflow.exits import cache_layout
from calex_steps.workflow.resource_table import LIMITS, load_study, markdown, within_limits

START, END = "<!-- resources:start -->", "<!-- resources:end -->"


def test_running_doc_holds_the_generated_table():
    text = (ROOT / "docs" / "running.md").read_text()
    assert START in text and END in text, (
        f"docs/running.md lacks the markers {START} / {END}; put them around the resource "
        "table and paste `python -m calex_steps.workflow.resource_table --markdown` between them"
    )
    between = text.split(START, 1)[1].split(END, 1)[0]
    assert between.strip() == markdown().strip(), (
        "docs/running.md's resource table is stale: regenerate it with "
        "`python -m calex_steps.workflow.resource_table --markdown`"
    )


def test_paper_study_fits_one_gpu_box():
    used = within_limits("workflow_config.yaml")
    for key, limit in LIMITS.items():
        assert used[key] <= limit, f"{key}: {used[key]:.2f} > {limit}"


def test_head_memory_is_bounded_by_the_batch():
    """Doubling the dataset grows a head job's RAM by its per-sample arrays only."""
    cfg = load_study("workflow_config.yaml")
    small = r.joint_mem_mb(cfg, "cinic10", "resnet50", "pteenet")
    sizes = {"n_train": 180_000, "n_val": 180_000, "n_test": 180_000}
    cfg["datasets"]["cinic10"] = {"source": "synthetic", "num_coarse": 10, **sizes}
    big = r.joint_mem_mb(cfg, "cinic10", "resnet50", "pteenet")
    assert small < big < 1.1 * small
    for branch in (1, 2, 3):
        assert r.feature_mem_mb(cfg, "cinic10", "resnet50", branch, "calexnet") < 12_000


def _dry_run_jobs(configfile: str, workdir) -> list[dict]:
    """Every job of a fresh run (a private copy: a finished demo in the checkout schedules
    nothing)."""
    copy_workflow(workdir)
    cmd = [SNAKEMAKE, "-n", "--cores", "2", "--configfile", configfile]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=rule \w+:|localrule \w+:)", out.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"resources: (.*)", block)
        if head and res:
            wildcards = re.search(r"wildcards: (.*)", block)
            pairs = (
                dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {}
            )
            found = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
            jobs.append({"rule": head.group(1), "wildcards": pairs, "resources": found})
    return jobs


def test_rules_ask_what_the_estimates_say(tmp_path):
    cfg = load_study("config/demo.yaml")
    jobs = _dry_run_jobs("config/demo.yaml", tmp_path / "wf")
    expected = {
        "prepare_dataset": lambda w: r.prepare_mem_mb(cfg, w["dataset"]),
        "train_branch": lambda w: r.feature_mem_mb(
            cfg, w["dataset"], w["backbone"], int(w["branch"]), w["recipe"]
        ),
        "train_joint": lambda w: r.joint_mem_mb(cfg, w["dataset"], w["backbone"], w["recipe"]),
        **{rule: (lambda w, mb=mb: mb) for rule, mb in r.FIXED_MEM_MB.items()},
    }
    checked = set()
    for job in jobs:
        job["rule"] = re.sub(r"^(train_joint|ztw_ensemble)_\d+$", r"\1", job["rule"])  # per count
        if job["rule"] in expected:
            want = expected[job["rule"]](job["wildcards"])
            assert int(job["resources"]["mem_mb"]) == want, job
            checked.add(job["rule"])
        if job["rule"] == "prepare_dataset":
            assert int(job["resources"]["disk_mb"]) == r.prepared_disk_mb(cfg, "synthetic")
    assert {"prepare_dataset", "train_branch", "train_joint", "cache_features"} <= checked


def test_cache_size_estimate_matches_a_written_cache(tmp_path):
    """attach_floats and cache_disk_mb agree with what cache_features really writes, for every
    form a head reads (prototype heads, SDN's pooled maps, a convolutional head's raw map)."""
    torch.set_num_threads(1)
    prepared = write_synthetic_prepared(tmp_path / "prepared.h5", n_train=40, n_val=20, n_test=20,
                                        num_coarse=4, fine_per_coarse=1)  # fmt: skip
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3}
    model = build_backbone("resnet18", 0.25, num_classes=4)
    torch.save({"arch": "resnet18", "width": 0.25, "num_classes": 4, "normalization": norm,
                "state_dict": model.state_dict()}, tmp_path / "backbone.pt")  # fmt: skip
    attach = ["layer1", "layer2", "layer3", "layer4"]
    cfg = {"backbones": {"b": {"arch": "resnet18", "width": 0.25, "attach_points": attach}},
           "datasets": {"d": {"source": "synthetic", "n_train": 40, "n_val": 20, "n_test": 20,
                              "num_coarse": 4}}, "cache": {"compact": "none"},
           "study": {"recipes": ["proto", "sdn", "conv"], "backbones": ["b"]},
           "recipes": {"proto": {"head": "augmented"}, "sdn": {"head": "sdn"},
                       "conv": {"head": "msdnet", "exits": ["layer1", "layer4"]}},
           "recipe_exits": {"proto": {"b": attach}, "sdn": {"b": attach},
                            "conv": {"b": ["layer1", "layer4"]}}}  # fmt: skip
    layout = cache_layout(cfg, "b")
    assert layout["layer1"] == ["proto", "pooled", "map"] and layout["layer3"] == [
        "proto",
        "pooled",
    ]
    out = tmp_path / "features.h5"
    run_cache_features(
        prepared, tmp_path / "backbone.pt", None, layout, {"batch_size": 32}, "cpu", out
    )
    with h5py.File(out) as f:
        seen = []
        for num, point in enumerate(attach, start=1):
            for form in layout[point]:
                stored = f["train"][form_dataset(f["train"], num, form)]
                assert r.attach_floats(cfg, "b", point, form) == stored.size // len(stored)
                seen.append(stored.name)
        # layer1 stores its Gram (smaller) and its map; layer4's proto form is its map already
        assert "/train/map1" in seen and "/train/map4" not in seen
        assert len(set(seen)) == len(r.layout_floats(cfg, "b")) == 9
    assert out.stat().st_size <= r.cache_disk_mb(cfg, "d", "b") * 2**20 + 64 * 1024


@pytest.mark.parametrize("configfile", ["workflow_config.yaml", "config/demo.yaml"])
def test_markdown_names_every_pair(configfile):
    cfg = load_study(configfile)
    text = markdown()
    for dataset in cfg["study"]["datasets"]:
        for backbone in cfg["study"]["backbones"]:
            assert f"| {dataset} × {backbone} |" in text


def test_command_line_prints_the_table(capsys):
    assert resource_table.main(["--markdown"]) == 0
    assert capsys.readouterr().out == markdown()
