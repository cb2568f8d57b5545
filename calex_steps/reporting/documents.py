"""The Markdown and LaTeX documents of one dataset's tables (``make_tables`` writes them)."""

from __future__ import annotations

from calex_steps.reporting import tables

# view -> (file stem, digits, title)
VIEWS = {
    "loss_fr": ("loss_at_fr", 1, "Accuracy loss (points; lower is better) at fixed FLOPs "
                "reduction on {dataset}, read on the dense margin frontier."),
    "iso_fr": ("iso_accuracy", 2, "Largest FLOPs reduction reached within an accuracy-loss "
               "budget on {dataset} (higher is better), read on the dense margin frontier."),
    "loss_lr": ("loss_at_lr", 1, "Accuracy loss (points; lower is better) at fixed latency "
                "reduction (LR) on {dataset}, predicted from measured segment times."),
}  # fmt: skip
NOTES = (
    "Cells: mean over runs [bootstrap interval]. {dagger} extrapolated: past the largest "
    "reduction a run reached, by at most {tolerance:g}; {missing} not reached within "
    "{tolerance:g}. Paired differences: the recipe minus the reference on the same test "
    "images, seeds and splits, each with a per-comparison interval (not corrected for the "
    "number of recipes and targets compared)."
)
GRID_TITLE = (
    "Accuracy loss (points) on {dataset} read on the paper's margins only; in brackets how "
    "far each cell moves from the dense frontier (paper grid − frontier). {notes}"
)


def render(out: dict, recipes, dataset: str, tolerance: float) -> dict[str, str]:
    """File name -> text of every Markdown and LaTeX table of ``study.tabulate``'s ``out``."""
    notes = NOTES.format(dagger=tables.EXTRAPOLATED_MARK, missing=tables.MISSING_MARK,
                         tolerance=tolerance)  # fmt: skip
    files = {}
    for view, (stem, digits, title) in VIEWS.items():
        headers = dict(out["bases"])
        if view == "loss_lr":  # say what the times were measured on
            headers = {b: f"{out['conditions'][b]}; {basis}" for b, basis in headers.items()}
        md, tex = tables.view_documents(
            out[view], recipes, view, digits, title.format(dataset=dataset), notes, headers
        )
        files[f"{stem}.md"], files[f"{stem}.tex"] = md, tex
    title = GRID_TITLE.format(dataset=dataset, notes=notes.split(" Paired")[0])
    files["paper_grid.md"] = tables.paper_grid_markdown(
        out["paper_grid"], recipes, list(out["bases"]), 1, title
    )
    return files


def csv_files(out: dict) -> dict:
    """File name -> frame of every CSV table."""
    stems = {view: stem for view, (stem, _, _) in VIEWS.items()}
    frames = {f"{stems[view]}.csv": out[view] for view in stems}
    return {**frames, "paper_grid.csv": out["paper_grid"], "ranking.csv": out["ranking"]}
