"""The paper's qualitative claims, checked on the run's own numbers.

Each claim is a sign claim about a contrast of accuracy losses (a weighted sum
over recipes, e.g. calexnet − noalign), read at FRs every involved run
measured. Its verdict comes from the bootstrap replicates ``make_tables``
saved (docs/results.md, section Claims):
  holds               at every FR tested, the interval excludes zero on the claimed side;
  refuted             at some FR, the Bonferroni-widened interval (level 1 − α/k for
                      k FRs) excludes zero on the other side;
  not distinguishable otherwise;
  not tested          a recipe it needs was not run, or no FR was measured by all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calex_steps.errors import CalexError
from calex_steps.reporting.bootstrap import interval
from calex_steps.reporting.curves import MEASURED
from calex_steps.reporting.tables import ABLATION_FRS, number


@dataclass(frozen=True)
class Claim:
    """``text``: the claim; ``measure``: the contrast in words; ``weights``: recipe -> weight
    of its loss in the contrast; ``where``: ``all`` FRs, the ``ablation`` FRs, or ``tight``
    (the tightest margin); ``sign``: the contrast's sign the claim asserts."""

    text: str
    measure: str
    weights: tuple[tuple[str, float], ...]
    where: str
    sign: int


CLAIMS = (
    Claim("CalexNet loses less accuracy than the no-alignment reference at every FR",
          "loss(calexnet) − loss(noalign)", (("calexnet", 1.0), ("noalign", -1.0)), "all", -1),
    Claim("KD is the dominant lever of the 2×2 ablation (its main effect exceeds alignment's)",
          "loss(kd_only) − loss(align_only), which equals KD's main effect minus alignment's",
          (("kd_only", 1.0), ("align_only", -1.0)), "ablation", -1),
    Claim("Alignment alone (without KD) is slightly negative",
          "loss(align_only) − loss(noalign)", (("align_only", 1.0), ("noalign", -1.0)),
          "ablation", 1),
    Claim("Alignment and KD together are super-additive",
          "loss(calexnet) − loss(kd_only) − loss(align_only) + loss(noalign): the joint gain "
          "over noalign minus the sum of the two single gains",
          (("calexnet", 1.0), ("kd_only", -1.0), ("align_only", -1.0), ("noalign", 1.0)),
          "ablation", -1),
    Claim("At the tightest margin CalexNet stays near the backbone's accuracy",
          "loss(calexnet) at the tightest margin of the paper grid", (("calexnet", 1.0),),
          "tight", -1),
)  # fmt: skip


def read_bootstrap(path: Path) -> dict:
    """The replicates ``make_tables`` saved for one dataset."""
    if not Path(path).is_file():
        raise CalexError(f"{path} does not exist; run make_tables first")
    with np.load(path) as data:
        needed = ("dataset", "backbones", "recipes", "loss_fr_reps", "tight_reps")
        if any(k not in data.files for k in needed):
            raise CalexError(f"{path} is of an older format; rerun make_tables")
        return {k: data[k] for k in data.files}


def _contrast(boot: dict, b: int, claim: Claim):
    """(labels, point (T,), reps (B, T), status (T,)) of a claim's contrast on backbone b."""
    view = "tight" if claim.where == "tight" else "loss_fr"
    recipes = list(boot["recipes"])
    rows = [recipes.index(r) for r, _ in claim.weights]
    w = np.array([weight for _, weight in claim.weights])
    point = np.tensordot(w, boot[f"{view}_point"][b][rows], axes=1)
    reps = np.tensordot(boot[f"{view}_reps"][b][:, rows], w, axes=([1], [0]))
    status = boot[f"{view}_status"][b][rows].max(axis=0)
    targets = boot[f"{view}_targets"][b]
    if view == "tight":
        return [f"m = {float(boot['tight_margin']):g}"], point, reps, status
    keep = np.ones(targets.shape, bool)
    if claim.where == "ablation":
        keep = np.isin(np.round(targets, 9), np.round(ABLATION_FRS, 9))
    labels = [f"FR {t:g}" for t in targets[keep]]
    return labels, point[keep], reps[:, keep], status[keep]


def check(boot: dict, b: int, claim: Claim, confidence: float, allowance: float) -> tuple:
    """(verdict, evidence lines) of one claim on backbone ``b`` of a dataset.

    The contrast is compared with 0, or with ``allowance`` (points) for the
    tightest-margin claim.
    """
    lacking = [r for r, _ in claim.weights if r not in set(boot["recipes"])]
    if lacking:
        return "not tested", [f"the study did not run {', '.join(lacking)}"]
    labels, point, reps, status = _contrast(boot, b, claim)
    limit = allowance if claim.where == "tight" else 0.0
    tested = status == MEASURED
    if not labels:
        return "not tested", ["none of the FRs it needs is among the report's targets"]
    lo, hi = interval(reps, confidence)
    wide_lo, wide_hi = interval(reps, 1 - (1 - confidence) / max(int(tested.sum()), 1))
    lines = []
    for t, label in enumerate(labels):
        if tested[t]:
            values = (number(v, 2, sign=True) for v in (point[t], lo[t], hi[t]))
            lines.append("{}: {} pp [{}, {}]".format(label, *values))
        else:
            lines.append(f"{label}: not tested (extrapolated or not reached by a recipe it needs)")
    if not tested.any():
        return "not tested", lines
    holds = (hi < limit) if claim.sign < 0 else (lo > limit)
    refuted = (wide_lo > limit) if claim.sign < 0 else (wide_hi < limit)
    if refuted[tested].any():
        return "refuted", lines
    return ("holds" if holds[tested].all() else "not distinguishable"), lines


def claims_markdown(boots: list[dict], confidence: float, allowance: float) -> str:
    """``results/claims.md``: an overview of verdicts, then the evidence of each claim."""
    sections, overview = [], {}
    for boot in boots:
        for b, backbone in enumerate(boot["backbones"]):
            where = f"{boot['dataset']}, {backbone}"
            sections += ["", f"## {where}"]
            for index, claim in enumerate(CLAIMS, start=1):
                verdict, lines = check(boot, b, claim, confidence, allowance)
                overview.setdefault(index, []).append(verdict)
                side = "below" if claim.sign < 0 else "above"
                limit = f"{allowance:g} pp" if claim.where == "tight" else "zero"
                need = f"Measured: {claim.measure}; the claim needs it {side} {limit}."
                sections += ["", f"### {index}. {claim.text}: **{verdict}**", "", need, ""]
                sections += [f"- {line}" for line in lines]
    places = [f"{boot['dataset']}, {b}" for boot in boots for b in boot["backbones"]]
    head = [
        "# Paper claims checked on this run",
        "",
        "Generated by the write_claims rule from `results/tables/*/bootstrap.npz` (make_tables).",
        f"Evidence: the contrast's mean over runs [{confidence:.0%} paired bootstrap interval],",
        "at each FR every recipe involved measured without extrapolation. A claim holds when",
        "every interval excludes zero on the claimed side, is refuted when at some FR a",
        "Bonferroni-widened interval excludes zero on the other side, and is not",
        "distinguishable otherwise.",
        "",
        "| claim | " + " | ".join(places) + " |",
        "|---|" + "---|" * len(places),
    ]
    for index, claim in enumerate(CLAIMS, start=1):
        head.append(f"| {index}. {claim.text} | " + " | ".join(overview[index]) + " |")
    return "\n".join(head + sections) + "\n"
