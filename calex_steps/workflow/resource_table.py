"""The resource table of docs/running.md: disk, RAM, GPU memory and GPU-hours of a study.

Built from the same functions the rules call for ``mem_mb`` and ``runtime``
(``calex_steps.workflow.resources``), for the paper's study
(``workflow_config.yaml``), the demo and the real-data configuration. A test
keeps the copy in docs/running.md equal to ``markdown()``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from calex_steps.workflow import resources as r
from calex_steps.workflow.config import needs_probe, resolve_recipe, validate_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = "workflow_config.yaml"
STUDIES = (
    ("The paper's study", "workflow_config.yaml"),
    ("The demo", "config/demo.yaml"),
    ("Real data: CIFAR-10 JPEG + ResNet-56", "config/cifar10_resnet56.yaml"),
)
LIMITS = {"ram_gb": 64, "gpu_gb": 24, "disk_tb": 1}
GB = 2**30
HEADER = (
    "| dataset × backbone | prepared | backbone | cache float32 | cache float16 "
    "| branch files | peak RAM | peak GPU memory | GPU-hours |"
)


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` over ``base`` as Snakemake merges ``--configfile`` (mappings recursively)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study(configfile: str) -> dict:
    """The validated configuration of ``workflow_config.yaml`` with ``configfile`` over it."""
    cfg = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    if configfile != "workflow_config.yaml":
        cfg = merge(cfg, yaml.safe_load((ROOT / configfile).read_text()))
    return validate_config(cfg)


def _jobs(cfg: dict, dataset: str, backbone: str) -> set[str]:
    """The torch jobs this (dataset, backbone) runs."""
    jobs = {"cache_features", "train_branch", "train_joint"}
    jobs.add("import_backbone" if cfg["backbones"][backbone]["checkpoint"] else "pretrain_backbone")
    if needs_probe(cfg["datasets"][dataset]):
        jobs.add("probe_coarse")
    return jobs


def gpu_gb(cfg: dict, dataset: str, backbone: str) -> dict[str, float]:
    """GPU memory per job kind (GB): weights, optimizer state and one batch of activations."""
    arch, width = r._arch(cfg, backbone)
    params = r.PARAMS_M.get(arch, 23.5) * 1e6 * width**2
    acts = r.ACTIVATIONS_M.get(arch, 12.0) * 1e6 * width
    values = r.layout_floats(cfg, backbone)
    batch = r.head_batch_size(cfg)
    gpu = {
        "pretrain_backbone": 0.5 + (16 * params + 4 * cfg["pretrain"]["batch_size"] * acts) / GB,
        "cache_features": 0.5
        + (4 * params + 4 * cfg["cache"]["batch_size"] * acts * r.FORWARD_SHARE) / GB,
        "train_branch": 0.5 + 16 * batch * max(values) / GB,
        "train_joint": 0.5 + 16 * batch * sum(values) / GB,
    }
    return {job: gb for job, gb in gpu.items() if job in _jobs(cfg, dataset, backbone)}


def _read_min(cfg: dict, dataset: str, values: int) -> float:
    """Minutes to read one attach point's form (``values`` per sample) of the train split."""
    itemsize = 2 if cfg["cache"]["compact"].startswith("float16") else 4
    return r.train_size(cfg, dataset) * values * itemsize / r.MB / r.READ_MB_S / 60


def gpu_hours(cfg: dict, dataset: str, backbone: str) -> float:
    """GPU-hours of one (dataset, backbone): pretraining (unless a checkpoint is given), the
    probe's and the cache's forward passes, and every head epoch (bound by reading the cache)."""
    epoch = r._epoch_min(cfg, dataset, backbone)
    all_images = sum(r.split_sizes(cfg, dataset).values()) / r.train_size(cfg, dataset)
    forward = r.FORWARD_SHARE * epoch * all_images
    minutes = forward * (2 if needs_probe(cfg["datasets"][dataset]) else 1)
    if not cfg["backbones"][backbone]["checkpoint"]:
        minutes += epoch * cfg["pretrain"]["epochs"]
    for name in r.trained_recipes(cfg):
        reads = [_read_min(cfg, dataset, v) for v in r.branch_floats(cfg, backbone, name)]
        recipe = resolve_recipe(cfg, name)
        if recipe["schedule"] == "joint":
            epochs = recipe["cls_epochs"] + (
                recipe["conf_epochs"] if recipe["target"] == "boostnet" else 0
            )
        else:
            epochs = recipe["cls_epochs"] + recipe["conf_epochs"]
        # + one pass over all splits per branch to write its outputs
        minutes += len(cfg["study"]["seeds"]) * sum(reads) * (epochs + all_images)
    return minutes / 60


def ram_mb(cfg: dict, dataset: str, backbone: str) -> dict[str, int]:
    """RAM (MB) per job kind, as the rules ask for it."""
    jobs = {"prepare_dataset": r.prepare_mem_mb(cfg, dataset)}
    jobs.update(
        (job, mb) for job, mb in r.FIXED_MEM_MB.items() if job in _jobs(cfg, dataset, backbone)
    )
    trained = r.trained_recipes(cfg)
    jobs["train_branch"] = max(
        r.feature_mem_mb(cfg, dataset, backbone, b, name)
        for name in trained
        for b in range(1, len(r.branch_floats(cfg, backbone, name)) + 1)
    )
    jobs["train_joint"] = max(r.joint_mem_mb(cfg, dataset, backbone, name) for name in trained)
    return jobs


def _size(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def study_rows(cfg: dict) -> list[dict]:
    """One row per (dataset, backbone) of the study."""
    rows = []
    for dataset in cfg["study"]["datasets"]:
        for backbone in cfg["study"]["backbones"]:
            rows.append({
                "pair": f"{dataset} × {backbone}",
                "prepared": r.prepared_disk_mb(cfg, dataset),
                "backbone": r.backbone_disk_mb(cfg, backbone),
                "cache": r.cache_disk_mb(cfg, dataset, backbone, "none"),
                "cache16": r.cache_disk_mb(cfg, dataset, backbone, "float16"),
                "branches": r.branch_disk_mb(cfg, dataset, backbone),
                "ram": ram_mb(cfg, dataset, backbone),
                "gpu": gpu_gb(cfg, dataset, backbone),
                "hours": gpu_hours(cfg, dataset, backbone),
            })  # fmt: skip
    return rows


def study_markdown(title: str, configfile: str) -> str:
    """One study's tables: disk and GPU-hours per pair, then RAM per job kind."""
    cfg = load_study(configfile)
    rows = study_rows(cfg)
    lines = [
        f"**{title}** (`{configfile}`{'' if configfile == DEFAULTS else f' over {DEFAULTS}'})",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ram = max(row["ram"].items(), key=lambda kv: kv[1])
        gpu = max(row["gpu"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {row['pair']} | {_size(row['prepared'])} | {_size(row['backbone'])} "
            f"| {_size(row['cache'])} | {_size(row['cache16'])} | {_size(row['branches'])} "
            f"| {_size(ram[1])} ({ram[0]}) | {gpu[1]:.1f} GiB ({gpu[0]}) | {row['hours']:.3g} |"
        )
    fixed = sum(row["prepared"] + row["branches"] for row in rows)
    fixed += sum(r.backbone_disk_mb(cfg, b) for b in cfg["study"]["backbones"]) * len(
        cfg["study"]["datasets"]
    )
    total32 = _size(fixed + sum(row["cache"] for row in rows))
    total16 = _size(fixed + sum(row["cache16"] for row in rows))
    hours = sum(row["hours"] for row in rows)
    lines += [
        "",
        f"Whole study: {total32} of disk with the float32 cache, {total16} "
        f"with `cache.compact: float16`; {hours:.3g} GPU-hours"
        + (
            " (the device is the CPU: multiply by about 30 for CPU hours)."
            if cfg["device"] == "cpu"
            else "."
        ),
        "",
        "| job (RAM asked, per (dataset, backbone)) | "
        + " | ".join(row["pair"] for row in rows)
        + " |",
        "|---|" + "---|" * len(rows),
    ]
    jobs = ["prepare_dataset", *r.FIXED_MEM_MB, "train_branch", "train_joint"]
    for job in (j for j in jobs if any(j in row["ram"] for row in rows)):
        cells = " | ".join(_size(row["ram"].get(job)) for row in rows)
        lines.append(f"| {job} | {cells} |")
    return "\n".join(lines)


def within_limits(configfile: str = "workflow_config.yaml") -> dict[str, float]:
    """The study's largest RAM and GPU memory per job (GiB) and its disk (TiB, float32 cache)."""
    cfg = load_study(configfile)
    rows = study_rows(cfg)
    disk = sum(row["prepared"] + row["backbone"] + row["cache"] + row["branches"] for row in rows)
    return {
        "ram_gb": max(max(row["ram"].values()) for row in rows) / 1024,
        "gpu_gb": max(max(row["gpu"].values()) for row in rows),
        "disk_tb": disk / 1024**2,
    }


def markdown() -> str:
    """The whole generated table (what sits between the resource markers of docs/running.md)."""
    parts = [study_markdown(title, configfile) for title, configfile in STUDIES]
    note = (
        "Generated by `python -m calex_steps.workflow.resource_table --markdown` from the "
        "functions "
        "the rules call for `mem_mb` and `runtime`. Disk sizes are upper bounds; GPU-hours are "
        f"estimates for one A10G-class GPU with the cache read at {r.READ_MB_S} MB/s "
        "(head training is bound by reading the cache), not measurements."
    )
    return "\n\n".join([note, *parts]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m calex_steps.workflow.resource_table --markdown`` prints the docs/running.md
    table."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the resource table")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do: pass --markdown")
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
