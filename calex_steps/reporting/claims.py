"""The paper's qualitative claims, checked on the run's own numbers.

Each claim is a sign claim about a contrast of accuracy losses (a weighted sum
over recipes, e.g. calexnet − noalign), read at FRs every involved run
measured. Its verdict comes from the bootstrap replicates ``make_tables``
saved (docs/results.md, section Claims):
  holds               at every measured FR, the interval excludes zero on the claimed side;
  refuted             at some FR, the Bonferroni-widened interval (level 1 − α/k for
                      k FRs) excludes zero on the other side;
  not distinguishable otherwise;
  not tested          a recipe it needs was not run, or no FR was measured by all of them.
Every interval is a per-comparison one: nothing corrects for the number of claims,
recipes or datasets checked. The claims are built from the names of the recipes
that play each part (``paper_claims``), so one set of roles can be checked per
family of recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


# The parts the paper's recipes play in its claims, by their names in this project.
PAPER_ROLES = {"joint": "calexnet", "reference": "noalign", "align": "align_only",
               "kd": "kd_only"}  # fmt: skip


def paper_claims(roles: dict[str, str] | None = None, family: str = "") -> tuple[Claim, ...]:
    """The paper's five claims for the recipes playing ``roles`` (keys of
    ``PAPER_ROLES``: the joint recipe with alignment and KD, the reference with
    neither, alignment alone, KD alone); a ``family`` name prefixes each claim."""
    r = {**PAPER_ROLES, **(roles or {})}
    j, ref, a, kd = r["joint"], r["reference"], r["align"], r["kd"]
    claims = (
        Claim(f"{j} loses less accuracy than the no-alignment reference {ref} at every "
              "measured FR", f"loss({j}) − loss({ref})", ((j, 1.0), (ref, -1.0)), "all", -1),
        Claim(f"KD is the dominant lever of the 2×2 ablation: {kd} loses less than {a} "
              "(KD's main effect exceeds alignment's)", f"loss({kd}) − loss({a}), which "
              "equals KD's main effect minus alignment's", ((kd, 1.0), (a, -1.0)),
              "ablation", -1),
        Claim(f"Alignment alone without KD ({a}) is slightly negative",
              f"loss({a}) − loss({ref})", ((a, 1.0), (ref, -1.0)), "ablation", 1),
        Claim("Alignment and KD together are super-additive",
              f"loss({j}) − loss({kd}) − loss({a}) + loss({ref}): the joint gain over "
              f"{ref} minus the sum of the two single gains",
              ((j, 1.0), (kd, -1.0), (a, -1.0), (ref, 1.0)), "ablation", -1),
        Claim(f"At the tightest margin {j} stays near the backbone's accuracy",
              f"loss({j}) at the tightest margin of the paper grid", ((j, 1.0),), "tight", -1),
    )  # fmt: skip
    if not family:
        return claims
    return tuple(replace(c, text=f"{family}: {c.text}") for c in claims)


def family_claims(families: dict[str, dict[str, str]]) -> tuple[Claim, ...]:
    """The paper's claims for every family of recipes (``report.claim_families``: name ->
    roles); named by their family when there is more than one."""
    if len(families) == 1:
        return paper_claims(next(iter(families.values())))
    return tuple(c for name, roles in families.items() for c in paper_claims(roles, name))


CLAIMS = paper_claims()


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
    """(verdict, evidence lines, where it was tested) of one claim on backbone ``b``.

    The contrast is compared with 0, or with ``allowance`` (points) for the
    tightest-margin claim. ``where`` names the FRs (or the margin) every recipe
    involved measured, e.g. ``FR 0.4, 0.5``; empty when none was.
    """
    lacking = [r for r, _ in claim.weights if r not in set(boot["recipes"])]
    if lacking:
        return "not tested", [f"the study did not run {', '.join(lacking)}"], ""
    labels, point, reps, status = _contrast(boot, b, claim)
    limit = allowance if claim.where == "tight" else 0.0
    tested = status == MEASURED
    if not labels:
        return "not tested", ["none of the FRs it needs is among the report's targets"], ""
    lo, hi = interval(reps, confidence)
    wide_lo, wide_hi = interval(reps, 1 - (1 - confidence) / max(int(tested.sum()), 1))
    lines = []
    for t, label in enumerate(labels):
        if tested[t]:
            values = (number(v, 2, sign=True) for v in (point[t], lo[t], hi[t]))
            lines.append("{}: {} pp [{}, {}]".format(label, *values))
        else:
            lines.append(f"{label}: not tested (extrapolated or not reached by a recipe it needs)")
    where = tested_at([label for label, ok in zip(labels, tested, strict=True) if ok])
    if not tested.any():
        return "not tested", lines, where
    holds = (hi < limit) if claim.sign < 0 else (lo > limit)
    refuted = (wide_lo > limit) if claim.sign < 0 else (wide_hi < limit)
    if refuted[tested].any():
        return "refuted", lines, where
    return ("holds" if holds[tested].all() else "not distinguishable"), lines, where


def tested_at(labels: list[str]) -> str:
    """['FR 0.4', 'FR 0.5'] -> 'FR 0.4, 0.5'; a margin label stays as it is."""
    if not labels:
        return ""
    if all(label.startswith("FR ") for label in labels):
        return "FR " + ", ".join(label[3:] for label in labels)
    return ", ".join(labels)


def claims_markdown(
    boots: list[dict], confidence: float, allowance: float, claims: tuple[Claim, ...] = CLAIMS
) -> str:
    """``results/claims.md``: an overview of verdicts, then the evidence of each claim."""
    sections, overview = [], {}
    for boot in boots:
        for b, backbone in enumerate(boot["backbones"]):
            sections += ["", f"## {boot['dataset']}, {backbone}"]
            for index, claim in enumerate(claims, start=1):
                verdict, lines, where = check(boot, b, claim, confidence, allowance)
                cell = f"{verdict} ({where})" if where else verdict
                overview.setdefault(index, []).append(cell)
                side = "below" if claim.sign < 0 else "above"
                limit = f"{allowance:g} pp" if claim.where == "tight" else "zero"
                need = f"Measured: {claim.measure}; the claim needs it {side} {limit}."
                at = f", tested at {where}" if where else ""
                sections += ["", f"### {index}. {claim.text}{at}: **{verdict}**", "", need, ""]
                sections += [f"- {line}" for line in lines]
    places = [f"{boot['dataset']}, {b}" for boot in boots for b in boot["backbones"]]
    head = [
        "# Paper claims checked on this run",
        "",
        "Generated by the write_claims rule from `results/tables/*/bootstrap.npz` (make_tables).",
        f"Evidence: the contrast's mean over runs [{confidence:.0%} paired bootstrap interval],",
        "at each FR every recipe involved measured without extrapolation (listed beside each",
        "verdict). A claim holds when every interval excludes zero on the claimed side, is",
        "refuted when at some FR a Bonferroni-widened interval excludes zero on the other side,",
        "and is not distinguishable otherwise. The intervals are per comparison: nothing",
        "corrects for the number of claims, recipes and datasets checked here.",
        "",
        "| claim | " + " | ".join(places) + " |",
        "|---|" + "---|" * len(places),
    ]
    for index, claim in enumerate(claims, start=1):
        head.append(f"| {index}. {claim.text} | " + " | ".join(overview[index]) + " |")
    return "\n".join(head + sections) + "\n"
