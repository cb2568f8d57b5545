"""Stage `write_summary`: which recipe does best at each target, read from the rankings.

    python -m calex_steps.stages.write_summary --rankings results/tables/*/ranking.csv \
        --out results/summary.md
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from calex_steps.cli import stage_main, stage_parser
from calex_steps.data.files import save_text
from calex_steps.reporting.summary import read_rankings, summary_markdown

log = logging.getLogger("calex")


def run_write_summary(ranking_paths: Sequence[Path], out: Path) -> str:
    """Read the rankings, write the Markdown summary, return its text."""
    text = summary_markdown(read_rankings(ranking_paths))
    save_text(out, text)
    log.info("wrote %s", out)
    return text


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("write_summary", __doc__)
    p.add_argument("--rankings", type=Path, nargs="+", required=True, help="ranking.csv files")
    p.add_argument("--out", type=Path, required=True, help="summary.md to write")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""
    return stage_main(build_parser, lambda a: run_write_summary(a.rankings, a.out), argv)


if __name__ == "__main__":
    raise SystemExit(main())
