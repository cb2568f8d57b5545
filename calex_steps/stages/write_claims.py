"""Stage `write_claims`: the paper's qualitative claims checked on every dataset of the run.

    python -m calex_steps.stages.write_claims --bootstraps results/tables/*/bootstrap.npz \
        --settings '{"confidence": 0.95, "near_backbone": 1.0}' --out results/claims.md

Each verdict (holds / refuted / not distinguishable / not tested) is derived
by code from the paired bootstrap replicates make_tables saved, and printed
next to its evidence (calex_steps.reporting.claims; docs/results.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.files import save_text
from calex_steps.errors import CalexError
from calex_steps.reporting.claims import (
    PAPER_ROLES,
    claims_markdown,
    family_claims,
    read_bootstrap,
)

log = logging.getLogger("calex")
SETTINGS_KEYS = ("confidence", "near_backbone")
OPTIONAL_KEYS = ("claim_families",)  # default: the paper's recipes only


def run_write_claims(bootstraps: Sequence[Path], settings: dict, out: Path) -> str:
    """Check every claim, for every family of recipes, on every dataset's replicates; write
    and return ``claims.md``."""
    if not set(SETTINGS_KEYS) <= set(settings) <= set(SETTINGS_KEYS + OPTIONAL_KEYS):
        raise CalexError(f"--settings takes the keys {list(SETTINGS_KEYS)} and optionally "
                         f"{list(OPTIONAL_KEYS)}; got {sorted(settings)}")  # fmt: skip
    boots = [read_bootstrap(path) for path in bootstraps]
    claims = family_claims(settings.get("claim_families") or {"paper": PAPER_ROLES})
    text = claims_markdown(boots, float(settings["confidence"]), float(settings["near_backbone"]),
                           claims)  # fmt: skip
    save_text(out, text)
    log.info("wrote %s", out)
    return text


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("write_claims", __doc__)
    p.add_argument("--bootstraps", type=Path, nargs="+", required=True,
                   help="bootstrap.npz of each dataset (make_tables)")  # fmt: skip
    p.add_argument(
        "--settings",
        required=True,
        help='JSON: {"confidence": ..., "near_backbone": ..., "claim_families": {...}}',
    )
    p.add_argument("--out", type=Path, required=True, help="claims.md to write")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        run_write_claims(a.bootstraps, parse_json_arg(a.settings, schema="report"), a.out)

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
