"""Stage `make_tables`: every table of one dataset, with bootstrap intervals.

    python -m calex_steps.stages.make_tables \
        --frontiers results/D/*/*/seed*/split*/frontier.csv \
        --sweeps results/D/*/*/seed*/split*/sweep.csv \
        --exits results/D/*/*/seed*/split*/exits.npz \
        [--segments results/D/*/latency/segments.json] \
        --settings '{"backbones": [...], "recipes": [...], "reference": "noalign", ...}' \
        --out-dir results/tables/D

Reads each run's dense margin frontier and per-image exits (every split of
every seed), resamples the held-out pool's images (one weight per image, shared
by the splits that hold it), the calibration (the curves each sweep recalibrated
on the same resamples) and the seeds (a paired bootstrap, docs/results.md)
and writes into --out-dir:
  loss_at_fr.{csv,md,tex}     accuracy loss at fixed FLOPs reduction, paired differences
  iso_accuracy.{csv,md,tex}   the largest FR within each accuracy-loss budget
  loss_at_lr.{csv,md,tex}     accuracy loss at fixed latency reduction ("not measured"
                              for a backbone without --segments timings)
  paper_grid.{csv,md}         the loss read on the paper's eight margins, and how far
                              each cell moves from the dense frontier
  ranking.csv                 per target, every recipe's probability of being best over the
                              bootstrap replicates, and the recipes not told apart from it
  bootstrap.npz               the replicates write_claims checks the paper's claims on
A cell past the largest reduction a run reached is marked extrapolated (CSV
`status`, a dagger in Markdown and LaTeX); further than `tolerance` it is "—".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from calex_steps.cli import parse_json_arg, stage_main, stage_parser
from calex_steps.data.files import save_csv, save_npz, save_text
from calex_steps.errors import CalexError
from calex_steps.reporting import documents, runfiles, study

log = logging.getLogger("calex")
CSV_FLOAT = "%.4f"


def segment_conditions(segments: Sequence[Path], batch_size) -> dict[str, str]:
    """Backbone -> what its latency was measured on, from ``results/D/B/latency/segments.json``."""
    out = {}
    for path in segments:
        parts = Path(path).parts
        if len(parts) < 3 or parts[-2] != "latency":
            raise CalexError(f"{path} is not laid out as results/DATASET/BACKBONE/latency/FILE")
        out[parts[-3]] = runfiles.latency_condition(path, batch_size)
    return out


def run_make_tables(
    frontiers: Sequence[Path],
    sweeps: Sequence[Path],
    exits: Sequence[Path],
    settings: dict,
    out_dir: Path,
    segments: Sequence[Path] = (),
) -> dict:
    """Build every table of one dataset; write the files the module docstring lists.

    Returns:
        ``study.tabulate``'s dict (frames, replicate arrays, bases, conditions).
    """
    settings = study.check_settings(settings)
    frontier, paper = runfiles.read_tables(frontiers), runfiles.read_tables(sweeps)
    datasets = sorted(set(frontier["dataset"]) | set(paper["dataset"]))
    if len(datasets) != 1:
        raise CalexError(f"make_tables builds one dataset's tables; the inputs span {datasets}")
    by_run = {study.run_key(p): Path(p) for p in exits}
    conditions = segment_conditions(segments, settings["lr_batch_size"])
    out = study.tabulate(frontier, paper, by_run, settings, conditions)
    texts = documents.render(out, settings["recipes"], datasets[0], settings["tolerance"])
    for name, text in texts.items():
        save_text(Path(out_dir) / name, text)
    for name, frame in documents.csv_files(out).items():
        save_csv(frame, Path(out_dir) / name, CSV_FLOAT)
    save_npz(Path(out_dir) / "bootstrap.npz", out["arrays"])
    log.info("wrote the tables of %s into %s", datasets[0], out_dir)
    return out


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("make_tables", __doc__)
    for name, what in (("frontiers", "frontier.csv"), ("sweeps", "sweep.csv"),
                       ("exits", "exits.npz")):  # fmt: skip
        p.add_argument(f"--{name}", type=Path, nargs="+", required=True, help=f"{what} files")
    p.add_argument("--segments", type=Path, nargs="*", default=[],
                   help="latency/segments.json of each backbone (optional)")  # fmt: skip
    p.add_argument("--settings", required=True, help='JSON: {"backbones": [...], ...}')
    p.add_argument("--out-dir", type=Path, required=True, help="results/tables/DATASET")
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        settings = parse_json_arg(a.settings, schema=("study", "latency", "report"))
        run_make_tables(a.frontiers, a.sweeps, a.exits, settings, a.out_dir,
                        a.segments)  # fmt: skip

    return stage_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
