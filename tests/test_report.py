"""The whole report of a finished tiny run (`snakemake --report`), shown in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, SNAKEMAKE, clone_run
from PIL import Image

FIGURES = ("pareto", "ablation", "calibration", "shift", "flow", "exemplars")


# The test drives the report app the way a reader would: it opens the "Pareto
# frontiers" category, clicks the figure's view button, and records what the
# rendered <img> holds (decoded size, visible box) in a <pre> the DOM dump shows.
DRIVER = """<script>
(function () {
  function record(value) {
    var pre = document.createElement("pre");
    pre.id = "calex-check";
    pre.textContent = JSON.stringify(value);
    document.body.appendChild(pre);
  }
  function step(i) {
    if (i === 0) {
      var items = Array.from(document.querySelectorAll("nav a, nav li, nav span, nav div"));
      var hit = items.filter(function (n) {
        return n.textContent.trim() === "Pareto frontiers"; }).pop();
      if (hit) { hit.click(); }
    } else if (i === 1) {
      var rows = Array.from(document.querySelectorAll("tr")).filter(function (r) {
        return /pareto/.test(r.textContent); });
      if (rows.length && rows[0].querySelector("a")) { rows[0].querySelector("a").click(); }
    } else {
      var img = Array.from(document.querySelectorAll("img")).filter(function (m) {
        return m.src.indexOf("data:image/png") === 0 && m.closest("nav") === null; })[0];
      if (!img) { record({found: false}); return; }
      var box = img.getBoundingClientRect();
      record({found: true, width: img.naturalWidth, height: img.naturalHeight,
              shown: img.complete && box.width > 0 && box.height > 0});
      return;
    }
    setTimeout(function () { step(i + 1); }, 300);
  }
  window.addEventListener("load", function () { setTimeout(function () { step(0); }, 500); });
})();
</script>"""


def snakemake_target(workdir: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    """Build ``target`` of the tiny run in ``workdir`` (the target goes before --configfile)."""
    cmd = [SNAKEMAKE, target, "--cores", "2", *args, "--configfile", "tiny.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)


def chromium() -> str | None:
    """Path of a Chromium binary, if one is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def shown_pareto(report: Path, workdir: Path) -> dict:
    """Open ``report`` (with the driver appended) in headless Chromium; return the record."""
    html = report.read_text(encoding="utf-8")
    at = html.rfind("</body>")
    driven = workdir / "driven.html"
    driven.write_text(html[:at] + DRIVER + html[at:], encoding="utf-8")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={workdir / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", driven.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    start = dom.find('<pre id="calex-check">')
    assert start >= 0, "the report page did not finish the driver script"
    body = dom[start + len('<pre id="calex-check">') : dom.find("</pre>", start)]
    return json.loads(body.replace("&quot;", '"'))


@pytest.mark.slow
def test_tiny_run_has_every_table_figure_and_a_report(tiny_run, tmp_path):
    run = clone_run(tiny_run, tmp_path / "run")
    if not (run / "reports" / "captions").is_dir():  # older fixtures copy no captions
        shutil.copytree(ROOT / "reports" / "captions", run / "reports" / "captions")
    result = snakemake_target(run, "report_all")
    assert result.returncode == 0, result.stderr[-4000:]
    tables = run / "results" / "tables" / "synthetic"
    for stem in ("loss_at_fr", "iso_accuracy", "loss_at_lr"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{stem}.{ext}").stat().st_size > 100
    assert "| `calexnet` |" in (tables / "loss_at_fr.md").read_text()
    assert "paired difference to `noalign`" in (tables / "loss_at_fr.md").read_text()
    assert (tables / "paper_grid.md").stat().st_size > 100
    figures = run / "results" / "figures" / "synthetic" / "r18tiny"
    for name in FIGURES:
        assert (figures / f"{name}.png").stat().st_size > 5000
        assert (figures / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    summary = (run / "results" / "summary.md").read_text()
    assert "## synthetic, r18tiny" in summary
    # a measured target names its best recipe, or those that cannot be told apart from it
    assert "loses least" in summary or "cannot be told apart from the best" in summary
    claims = (run / "results" / "claims.md").read_text()
    assert "| claim | synthetic, r18tiny |" in claims and "not tested" in claims

    report = run / "reports" / "report.html"
    result = snakemake_target(run, "report_all", "--report", str(report))
    assert result.returncode == 0, result.stderr[-4000:]
    assert report.stat().st_size > 100_000
    if chromium() is None:
        pytest.skip("Chromium not found (apt-get install chromium): report not rendered")
    record = shown_pareto(report, tmp_path)
    with Image.open(figures / "pareto.png") as png:
        assert record == {"found": True, "width": png.width, "height": png.height, "shown": True}
