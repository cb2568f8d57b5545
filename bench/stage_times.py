"""Per-rule time and peak RSS of two finished runs, from Snakemake's benchmark files.

    python bench/stage_times.py BEFORE_DIR AFTER_DIR [--rules train_branch train_joint]

Each DIR is a workflow folder that ran (its `benchmarks/<rule>/**.tsv`). Prints,
per rule: the number of jobs, the summed wall time (s), the largest max_rss (MB)
in each run, and the after/before ratio of the summed time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def rule_stats(folder: Path) -> dict[str, dict]:
    """rule -> {jobs, seconds (sum), max_rss (largest, MB)} from benchmarks/<rule>/**.tsv."""
    stats = {}
    for rule_dir in sorted((folder / "benchmarks").iterdir()):
        tables = [pd.read_csv(p, sep="\t") for p in rule_dir.rglob("*.tsv")]
        if not tables:
            continue
        rows = pd.concat(tables)
        rss = pd.to_numeric(rows["max_rss"], errors="coerce")
        stats[rule_dir.name] = {
            "jobs": len(tables),
            "seconds": float(rows["s"].sum()),
            "max_rss": float(rss.max()),
        }
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rules", nargs="*", help="only these rules (default: every rule in both)")
    a = p.parse_args()
    before, after = rule_stats(a.before), rule_stats(a.after)
    rules = a.rules or [r for r in before if r in after]
    print("| rule | jobs before | jobs after | time before (s) | time after (s) | after/before "
          "| peak RSS before (MB) | peak RSS after (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for rule in rules:
        b, f = before[rule], after[rule]
        totals[0] += b["seconds"]
        totals[1] += f["seconds"]
        ratio = f["seconds"] / b["seconds"]
        print(f"| {rule} | {b['jobs']} | {f['jobs']} | {b['seconds']:.0f} | {f['seconds']:.0f} "
              f"| {ratio:.2f} | {b['max_rss']:.0f} | {f['max_rss']:.0f} |")  # fmt: skip
    print(f"| total | | | {totals[0]:.0f} | {totals[1]:.0f} | {totals[1] / totals[0]:.2f} | | |")


if __name__ == "__main__":
    main()
