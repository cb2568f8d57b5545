"""Stage write_claims: the paper's claims, with verdicts derived from bootstrap replicates."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import run_files, write_run

from calex_steps.errors import CalexError
from calex_steps.reporting.claims import check, claims_markdown, paper_claims, read_bootstrap
from calex_steps.stages.make_tables import run_make_tables
from calex_steps.stages.write_claims import run_write_claims

SETTINGS = {"confidence": 0.95, "near_backbone": 1.0}
TARGETS = np.array([0.4, 0.5, 0.6, 0.7, 0.8])
# The paper's 2×2 ablation (its Table A3) at FR 0.4 and 0.6, and made-up cells elsewhere.
PAPER = {
    "noalign": [6.1, 9.0, 16.6, 20.0, 25.0],
    "align_only": [7.3, 10.0, 18.0, 21.0, 26.0],
    "kd_only": [4.9, 8.0, 12.6, 17.0, 22.0],
    "calexnet": [4.2, 7.0, 12.4, 16.0, 21.0],
}


def write_boot(path, losses: dict, sd=0.05, status=None, tight=0.3, resamples=400):
    """A bootstrap.npz as make_tables writes it: one backbone, normal replicates."""
    recipes = list(losses)
    point = np.array([losses[r] for r in recipes])[None]  # (1, R, T)
    rng = np.random.default_rng(0)
    reps = point[:, None] + sd * rng.normal(size=(1, resamples, *point.shape[1:]))
    status = np.zeros(point.shape, np.int8) if status is None else status
    tight_point = np.full((1, len(recipes), 1), tight)
    tight_reps = tight_point[:, None] + sd * rng.normal(size=(1, resamples, len(recipes), 1))
    np.savez(path, dataset=np.array("syn"), backbones=np.array(["r18"]),
             recipes=np.array(recipes), tight_margin=0.01,
             status_names=np.array(["measured", "extrapolated", "missing"]),
             loss_fr_targets=TARGETS[None], loss_fr_point=point, loss_fr_reps=reps,
             loss_fr_status=status, tight_targets=np.zeros((1, 1)), tight_point=tight_point,
             tight_reps=tight_reps,
             tight_status=np.zeros((1, len(recipes), 1), np.int8))  # fmt: skip
    return path


def cells(text: str) -> list[str]:
    """The last column of the overview table, claim by claim: 'holds (FR 0.4, 0.6)'."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and ". " in line[:6]]
    return [row.strip("| ").split(" | ")[-1] for row in rows]


def verdicts(text: str) -> list[str]:
    """The verdicts of the overview table, claim by claim."""
    return [cell.split(" (")[0] for cell in cells(text)]


def test_the_papers_own_ablation_numbers_make_every_claim_hold(tmp_path):
    text = run_write_claims([write_boot(tmp_path / "b.npz", PAPER)], SETTINGS, tmp_path / "c.md")
    assert verdicts(text) == ["holds"] * 5
    # Each verdict says where it was tested: claim 1 at every measured FR, the ablation
    # claims at FR 0.4 and 0.6, the last at the tightest margin.
    assert cells(text) == ["holds (FR 0.4, 0.5, 0.6, 0.7, 0.8)"] + ["holds (FR 0.4, 0.6)"] * 3 + [
        "holds (m = 0.01)"
    ]
    assert (
        "### 1. calexnet loses less accuracy than the no-alignment reference noalign at "
        "every measured FR, tested at FR 0.4, 0.5, 0.6, 0.7, 0.8: **holds**"
    ) in text
    # The evidence is printed beside the verdict: the super-additivity contrast at FR 0.4.
    assert f"- FR 0.4: {4.2 - 4.9 - 7.3 + 6.1:+.2f} pp [" in text
    assert "- m = 0.01: +0.30 pp [" in text and "below 1 pp" in text


def test_a_contrast_on_the_other_side_refutes_and_noise_makes_it_indistinguishable(tmp_path):
    worse = {**PAPER, "calexnet": [8.0, 7.0, 12.4, 16.0, 21.0]}  # loses more than noalign at 0.4
    text = run_write_claims([write_boot(tmp_path / "a.npz", worse)], SETTINGS, tmp_path / "a.md")
    assert verdicts(text)[0] == "refuted"
    noisy = run_write_claims([write_boot(tmp_path / "b.npz", PAPER, sd=5.0, tight=3.0)],
                             SETTINGS, tmp_path / "b.md")  # fmt: skip
    assert verdicts(noisy) == ["not distinguishable"] * 5


def test_missing_recipes_and_extrapolated_cells_are_not_tested(tmp_path):
    two = {r: PAPER[r] for r in ("calexnet", "noalign")}
    status = np.zeros((1, 2, 5), np.int8)
    status[0, 0, 2:] = 1  # calexnet extrapolated from FR 0.6 on
    text = run_write_claims([write_boot(tmp_path / "b.npz", two, status=status)], SETTINGS,
                            tmp_path / "c.md")  # fmt: skip
    assert verdicts(text) == ["holds", "not tested", "not tested", "not tested", "holds"]
    assert cells(text)[0] == "holds (FR 0.4, 0.5)"  # tested only where both measured
    assert "- the study did not run kd_only, align_only" in text
    assert "- FR 0.7: not tested (extrapolated or not reached by a recipe it needs)" in text


def test_claims_of_made_sweeps_give_the_verdict_they_were_made_for(tmp_path):
    # calexnet's branch is right on 95% of the images it releases, noalign's on 60%: at
    # every FR calexnet loses far less. Both sweeps reach FR 0.62, so FR 0.4 to 0.6 are
    # measured, 0.7 extrapolated and 0.8 missing: the claim is tested at the first three.
    folders = [write_run(tmp_path / "results", recipe, seed=seed, quality=quality)
               for recipe, quality in (("calexnet", 0.95), ("noalign", 0.6))
               for seed in (0, 1)]  # fmt: skip
    settings = {"backbones": ["r18"], "recipes": ["calexnet", "noalign"], "resamples": 200}
    run_make_tables(*run_files(folders), settings, tmp_path / "tables")
    text = run_write_claims([tmp_path / "tables" / "bootstrap.npz"], SETTINGS, tmp_path / "c.md")
    assert "| claim | syn, r18 |" in text and "## syn, r18" in text
    assert cells(text)[0] == "holds (FR 0.4, 0.5, 0.6)"
    assert verdicts(text)[1:4] == ["not tested"] * 3
    # The same sweeps with the roles swapped: noalign now plays the joint recipe, and the
    # claim that it loses less than calexnet is refuted at the same FRs.
    swapped = paper_claims({"joint": "noalign", "reference": "calexnet"})
    boot = read_bootstrap(tmp_path / "tables" / "bootstrap.npz")
    verdict, lines, where = check(boot, 0, swapped[0], 0.95, 1.0)
    assert (verdict, where) == ("refuted", "FR 0.4, 0.5, 0.6")
    assert lines[3] == "FR 0.7: not tested (extrapolated or not reached by a recipe it needs)"
    text = claims_markdown([boot], 0.95, 1.0, swapped[:1])
    assert "| 1. noalign loses less accuracy than the no-alignment reference calexnet" in text


def test_bad_input_stops_with_one_line(tmp_path):
    folders = [write_run(tmp_path / "results", r) for r in ("calexnet", "noalign")]
    settings = {"backbones": ["r18"], "recipes": ["calexnet", "noalign"], "resamples": 200}
    run_make_tables(*run_files(folders), settings, tmp_path / "tables")
    with pytest.raises(CalexError, match="near_backbone"):
        run_write_claims([tmp_path / "tables" / "bootstrap.npz"], {"confidence": 0.9},
                         tmp_path / "d.md")  # fmt: skip
    np.savez(tmp_path / "old.npz", recipes=np.array(["calexnet"]))
    with pytest.raises(CalexError, match="older format"):
        run_write_claims([tmp_path / "old.npz"], SETTINGS, tmp_path / "d.md")
    assert not (tmp_path / "d.md").exists()


def test_each_family_of_recipes_gets_its_own_verdicts(tmp_path):
    # The paper's levers asked of a second family: its recipes carry the paper's numbers
    # with alignment made helpful alone (align_only_sdn6 below noalign_sdn6), so that
    # family's claim 3 is refuted while the paper family's holds.
    sdn = {"noalign_sdn6": [2.0, 3.0, 5.0, 7.0, 9.0],
           "align_only_sdn6": [1.0, 2.0, 3.5, 6.0, 8.0],
           "kd_only_sdn6": [1.5, 2.5, 4.0, 6.5, 8.5],
           "calexnet_sdn6": [0.2, 1.0, 2.0, 5.0, 7.0]}  # fmt: skip
    families = {"prototype heads": {"joint": "calexnet", "reference": "noalign",
                                    "align": "align_only", "kd": "kd_only"},
                "SDN heads": {"joint": "calexnet_sdn6", "reference": "noalign_sdn6",
                              "align": "align_only_sdn6", "kd": "kd_only_sdn6"},
                "not run": {"joint": "a", "reference": "b", "align": "c", "kd": "d"}}  # fmt: skip
    boot = write_boot(tmp_path / "b.npz", {**PAPER, **sdn})
    text = run_write_claims([boot], {**SETTINGS, "claim_families": families}, tmp_path / "c.md")
    assert verdicts(text)[:5] == ["holds"] * 5
    # SDN family: joint beats reference; KD alone loses more than alignment alone (claim 2
    # refuted); alignment alone helps (claim 3 refuted); 0.2 − 1.5 − 1.0 + 2.0 = −0.3 at FR
    # 0.4 but 2.0 − 4.0 − 3.5 + 5.0 = −0.5 at 0.6: super-additive; 0.3 pp at the tight margin.
    assert verdicts(text)[5:10] == ["holds", "refuted", "refuted", "holds", "holds"]
    assert verdicts(text)[10:] == ["not tested"] * 5
    assert (
        "| 6. SDN heads: calexnet_sdn6 loses less accuracy than the no-alignment reference "
        "noalign_sdn6" in text
    )
    assert "### 1. prototype heads: calexnet loses less" in text
