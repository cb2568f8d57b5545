"""The package's shape holds: stages apart from the library, imports flowing one way, files
that fit on a screen, and docs/architecture.md naming files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from calex_steps.workflow.code_deps import PLUMBING, module_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "calex_steps"
LIBRARY = ("data", "models", "training", "calibration", "cascade", "reporting", "workflow",
           "deploy")  # fmt: skip
NO_TORCH = (
    "data",
    "calibration",
    "reporting",
    "workflow",
    "cascade/simulate.py",
    "cascade/sweep.py",
    "cascade/__init__.py",
    "deploy/__init__.py",
    "deploy/onnx_runner.py",
    "deploy/onnx_graph.py",
    "deploy/decisions.py",
    "deploy/quantize.py",
)


def test_the_onnx_runner_needs_only_numpy_onnxruntime_and_pillow():
    imported = {m.split(".")[0] for m in all_imports(PACKAGE / "deploy" / "onnx_runner.py")}
    assert imported <= {"__future__", "argparse", "hashlib", "json", "sys", "pathlib", "numpy",
                        "onnxruntime", "PIL"}, imported  # fmt: skip


TARGETS = ("all", "report_all", "onnx_exports", "onnx_all")  # rules that only gather files


def rule_names() -> set[str]:
    """Every rule the workflow defines (plain, inherited, and named in a loop)."""
    text = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    names = set(re.findall(r"^rule (\w+):", text, re.M))
    names |= set(re.findall(r"^use rule \w+ as (\w+) with:", text, re.M))
    names |= set(re.findall(r'f"(\w+)\{_suffix\}"', text))
    return names - set(TARGETS)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_rule_has_its_stage_module_and_test():
    rules = rule_names()
    assert {"prepare_dataset", "train_branch", "sweep_margins", "plot_exemplars"} <= rules
    plots = (ROOT / "tests" / "test_plot_figures.py").read_text()
    for rule in sorted(rules):
        assert (PACKAGE / "stages" / f"{rule}.py").is_file(), f"rule {rule} has no stage module"
        test = ROOT / "tests" / f"test_{rule}.py"
        assert test.is_file() or f"{rule}." in plots, f"rule {rule} has no test"
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert stages == rules, "a stage module without a rule, or the reverse"


def test_stages_import_only_the_library_and_the_library_never_imports_stages():
    for path in (PACKAGE / "stages").glob("*.py"):
        imported = {m for m in all_imports(path) if m.startswith("calex_steps.stages")}
        assert not imported, f"{path.name} imports another stage: {imported}"
    for package in LIBRARY:
        for path in (PACKAGE / package).rglob("*.py"):
            assert not any(m.startswith("calex_steps.stages") for m in all_imports(path)), path


@pytest.mark.parametrize("where", NO_TORCH)
def test_light_packages_do_not_import_torch_at_module_level(where):
    paths = [PACKAGE / where] if where.endswith(".py") else (PACKAGE / where).rglob("*.py")
    for path in paths:
        heavy = {m for m in top_level_imports(path) if m.split(".")[0] in ("torch", "torchvision")}
        heavy |= {m for m in top_level_imports(path) if m.startswith("calex_steps.models")}
        assert not heavy, f"{path.relative_to(ROOT)} imports {heavy} at module level"


def test_files_fit_on_a_screen():
    long_modules = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    long_rules = [
        f"{p.name} ({n})"
        for p in (ROOT / "rules").glob("*.smk")
        if (n := len(p.read_text().splitlines())) > 200
    ]
    assert not long_modules and not long_rules


def test_plumbing_holds_nothing_that_could_change_a_result():
    # Editing these reruns nothing, so they must not grow code that shapes an output.
    for name in ("calex_steps/__init__.py", "calex_steps/stages/__init__.py"):
        body = ast.parse((ROOT / name).read_text()).body
        kinds = {type(node).__name__ for node in body}
        assert kinds <= {"Expr", "Assign"}, f"{name} holds {kinds}"
    plumbing = {name.removesuffix(".py").replace("/", ".") for name in PLUMBING}
    for name in PLUMBING:
        imported = {m for m in all_imports(ROOT / name) if m.startswith("calex_steps")}
        assert imported <= plumbing - {"calex_steps"}, f"{name} imports {imported}"


def test_code_inputs_follow_the_imports():
    files = module_files("calex_steps.stages.train_branch", PACKAGE)
    assert "calex_steps/training/branch.py" in files and "calex_steps/models/heads.py" in files
    assert "calex_steps/stages/train_branch.py" in files
    assert not set(PLUMBING) & set(files)
    assert "calex_steps/reporting/tables.py" not in files
    latency = module_files("calex_steps.stages.measure_latency", PACKAGE)
    assert "calex_steps/reporting/latency.py" in latency  # where it picks the operating point
    assert "calex_steps/cascade/simulate.py" in latency  # the segment-time prediction
    sweep = module_files("calex_steps.stages.sweep_margins", PACKAGE)
    assert not any(f.startswith("calex_steps/models/") for f in sweep)  # sweeps stay torch-free


def _named_paths(text: str) -> set[str]:
    """Repository paths written in backticks; a ``<family>`` template stays as written."""
    found = set(re.findall(r"`((?:calex_steps|tests|rules|docs|bench)/[\w/<>.-]+)`", text))
    return {p.rstrip(".") for p in found if "<rule>" not in p and "<module>" not in p}


def test_stage_table_names_files_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("## The stages") : text.index("## The tree")]
    families = ("pareto", "ablation", "calibration", "shift", "flow", "exemplars")
    for path in _named_paths(table):
        for concrete in {path.replace("<family>", f) for f in families}:
            assert (ROOT / concrete).exists(), f"the stage table names {concrete}: no such file"
    for library in re.findall(
        r"`((?:data|models|training|calibration|cascade|reporting|deploy)/[\w/.]*)`", table
    ):
        assert (PACKAGE / library.replace("<family>", "pareto")).exists(), library
    # and the other way round: every stage has its row
    for stage in sorted(p.stem for p in (PACKAGE / "stages").glob("*.py")):
        if stage != "__init__" and not stage.startswith("plot_"):
            assert f"| `{stage}` |" in table, f"the stage table has no row for {stage}"


def test_architecture_map_matches_the_tree():
    text = (ROOT / "docs" / "architecture.md").read_text()
    tree = text[text.index("```") + 3 : text.index("```", text.index("```") + 3)]
    folder = ROOT
    stack: list[tuple[int, Path]] = []
    for line in tree.splitlines():
        match = re.match(r"^(\s*)([\w.]+/?)(?:,\s*[\w.]+)*\s", line + " ")
        if not match or line.strip().startswith(("tests/", "bench/")):
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        folder = stack[-1][1] if stack else ROOT
        names = re.findall(r"[\w.]+\.(?:py|smk)|[\w]+/", line.split("  ")[0] if indent else line)
        for name in names or [match.group(2)]:
            path = folder / name.rstrip("/")
            assert path.exists(), f"docs/architecture.md names {path.relative_to(ROOT)}"
        if match.group(2).endswith("/"):
            stack.append((indent, folder / match.group(2).rstrip("/")))
    for path in _named_paths(text):
        if "<" not in path:  # the stage table's plot_<family> template is checked above
            assert (ROOT / path).exists(), f"docs/architecture.md names {path}"
