"""What the docs say is true of the repository.

README.md, config/README.md, data/README.md and every page under docs/ (whatever pages
exist) are read as a user reads them: every test, module, function, rule, rule file,
configuration key, Make target, link and job count they name must exist or hold, every
configuration said to differ from another only in some keys must, and the API examples
must run. A failure names the page and what it names.
"""

from __future__ import annotations

import ast
import doctest
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow, write_tiny
from test_architecture import TARGETS, rule_names
from test_workflow import scheduled

from calex_steps.data.sources import _required_files
from calex_steps.workflow.config import load_schema

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CONFIG_FILE = r"(?:config|bench)/[\w.-]+\.yaml|workflow_config\.yaml"
FILE_SUFFIXES = ("csv", "npz", "py", "md", "yaml", "h5", "pt", "json", "png", "pdf", "tsv",
                 "tex", "log", "html", "smk", "txt", "th", "pth", "onnx")  # fmt: skip
TOP = ("calex_steps", "tests", "rules", "docs", "bench", "config", "data", "ci", "profiles",
       "envs", "reports")  # fmt: skip
TOP_FILES = ("Snakefile", "workflow_config.yaml", "Makefile", "pyproject.toml", "LICENSE",
             "CITATION.cff", "README.md")  # fmt: skip


def pages() -> list[Path]:
    """Every documentation page, the ones other changes add included."""
    return [ROOT / "README.md", ROOT / "config" / "README.md", ROOT / "data" / "README.md",
            *sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip


def page_ids():
    return [str(p.relative_to(ROOT)) for p in pages()]


def prose(text: str) -> str:
    """The text without fenced code blocks."""
    return FENCE.sub("", text)


def code(text: str) -> list[str]:
    """Inline code spans and fenced blocks: where commands and names are written."""
    return [*FENCE.findall(text), *re.findall(r"`([^`\n]+)`", prose(text))]


def spans(text: str) -> list[str]:
    """Inline code spans only (a span may not cross a paragraph)."""
    return [s.replace("\n", " ") for s in re.findall(r"`([^`]+?)`", prose(text))]


def problems(found: list[str], page: Path) -> str:
    return f"{page.relative_to(ROOT)} names what does not exist: {found}"


# ---- files, modules, names -----------------------------------------------------------------


@cache
def defined_names(path: Path) -> frozenset[str]:
    """Top-level names a module defines or imports, and the members of its classes."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{n.name}" for n in node.body if hasattr(n, "name")}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def module_path(parts: list[str]) -> Path | None:
    """The file of a dotted module (a package's ``__init__.py``), or None."""
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def dotted_exists(name: str) -> bool:
    """``calex_steps.a.b.func`` (or ``.Class.method``) resolves in the source, statically."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_path(parts[:cut])
        if path is not None:
            rest = parts[cut:]
            return (
                not rest
                or ".".join(rest[:2]) in defined_names(path)
                or (rest[0] in defined_names(path) and len(rest) == 1)
            )
    return False


def path_exists(token: str) -> bool:
    """A repository path as the docs write it: from the root, or inside ``calex_steps/``;
    ``file.py:name`` and ``tests/test_x.py::test_name`` also check the name."""
    token = token.rstrip(".,;:")
    path, _, name = token.partition(":")
    name = name.lstrip(":").split("[")[0]
    for base in (ROOT, ROOT / "calex_steps"):
        target = base / path
        if target.exists():
            return not name or (target.suffix == ".py" and name in defined_names(target))
    return False


def is_template(token: str) -> bool:
    return any(c in token for c in "<>{}*…") or "..." in token


def ignored(paths: list[str]) -> set[str]:
    """The paths git ignores: where users put data and runs write outputs (.gitignore)."""
    cmd = ["git", "check-ignore", "--no-index", "--stdin"]
    out = subprocess.run(cmd, cwd=ROOT, input="\n".join(paths), capture_output=True, text=True)
    return set(out.stdout.split())


def test_named_files_exist():
    tops = "|".join(TOP)
    for page in pages():
        text = page.read_text()
        found = set(re.findall(rf"(?<![\w/.-])((?:{tops})/[\w/.<>{{}}*:-]*)", text))
        found |= {t for t in spans(text) if t in TOP_FILES}
        for span in spans(text):  # library paths written inside calex_steps/
            if re.fullmatch(r"(?:data|models|training|calibration|cascade|reporting|workflow|"
                            r"stages)/[\w/.:]*", span):  # fmt: skip
                found.add(span)
        missing = [t.rstrip(".,;:") for t in found if not is_template(t) and not path_exists(t)]
        bad = sorted(set(missing) - ignored(missing))
        assert not bad, problems(bad, page)


def test_named_modules_and_functions_exist():
    for page in pages():
        names = set(re.findall(r"\bcalex_steps(?:\.\w+)+", page.read_text()))
        bad = sorted(n for n in names if not dotted_exists(n))
        assert not bad, problems(bad, page)


@cache
def defined_tests() -> frozenset[str]:
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        names.add(path.stem)
        names |= {n for n in defined_names(path) if n.startswith("test_")}
    return frozenset(names)


def test_named_tests_exist():
    for page in pages():
        text = page.read_text()
        # a bare name is a test's when it reads as one (test_ and three words or more);
        # shorter ones are keys or array names (test_size, test_labels)
        named = {s for s in spans(text) if re.fullmatch(r"test(?:_[a-z0-9]+){3,}", s)}
        named |= {n for pair in re.findall(r"tests/(test_\w+)\.py(?:::(\w+))?", text)
                  for n in pair if n}  # fmt: skip
        bad = sorted(n for n in named if n not in defined_tests())
        assert not bad, problems(bad, page)


# ---- rules, Make targets -------------------------------------------------------------------


def all_rules() -> set[str]:
    return rule_names() | set(TARGETS)


def named_rules(text: str) -> set[str]:
    """Names the text calls rules: 'rule `x`', '`x` rule(s)/job(s)', 'snakemake x', and the
    first cells of tables headed 'stage', 'stage (rule)' or 'rule'."""
    body = prose(text)
    found = set(re.findall(r"\brules? `(\w+)`", body))
    found |= set(re.findall(r"`(\w+)` (?:rule|rules|job|jobs)\b", body))
    for snippet in code(text):
        found |= set(re.findall(r"\bsnakemake ([a-z]\w*)\b", snippet))
    for table in re.findall(r"(?:^\|.*\n)+", body, re.M):
        header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
        if header[0] in ("stage", "stage (rule)", "rule"):
            for line in table.splitlines()[2:]:
                found |= set(re.findall(r"`(\w+)`", line.strip("|").split("|")[0]))
    return found


def test_named_rules_exist():
    rules = all_rules()
    for page in pages():
        bad = sorted(r for r in named_rules(page.read_text()) if r not in rules)
        assert not bad, problems(bad, page)


def test_named_make_targets_exist():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for page in pages():
        named = {t for s in code(page.read_text()) for t in re.findall(r"\bmake ([a-z][\w-]*)", s)}
        assert named - targets == set(), problems(sorted(named - targets), page)


# ---- configuration keys --------------------------------------------------------------------

SCHEMA = load_schema()
NOT_CONFIG = {
    "gpu",
    "gpu_model",
    "gres",
    "slurm_partition",
    "slurm_account",
    "mem_mb",
    "runtime",
    "threads",
}  # fmt: skip  (Snakemake / SLURM resources)


def child(schema: dict, key: str) -> dict | None:
    """The schema of ``key`` under an object schema (a named property, else any name)."""
    if key in schema.get("properties", {}):
        return schema["properties"][key]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    # a key of one of the alternative forms (a list of names or a placement rule)
    subs = (child(alt, key) for alt in schema.get("oneOf", []) + schema.get("anyOf", []))
    return next((sub for sub in subs if sub is not None), None)


def key_problems(path: list[str], value=None, schema: dict = SCHEMA) -> list[str]:
    """What is wrong with a key path (and its value) under ``schema``."""
    for depth, key in enumerate(path):
        if key.startswith("<") and not isinstance(schema.get("additionalProperties"), dict):
            return []  # a template for one of several named keys
        sub = child(schema, key) if not key.startswith("<") else schema.get("additionalProperties")
        if sub is None and key.isdigit() and schema.get("type") == "array":
            return []
        if not isinstance(sub, dict):
            return [".".join(path[: depth + 1])]
        schema = sub
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in key_problems([*path, str(k)], v, SCHEMA)]
    if "enum" in schema and value is not None and not str(value).startswith("<"):
        if value not in schema["enum"]:
            return [f"{'.'.join(path)}: {value}"]
    return []


@cache
def all_keys() -> dict[str, list[dict]]:
    """Every property name anywhere in the schema, with the schemas it has."""
    found: dict[str, list[dict]] = {}

    def walk(schema):
        for key, sub in schema.get("properties", {}).items():
            found.setdefault(key, []).append(sub)
            walk(sub)
        if isinstance(schema.get("additionalProperties"), dict):
            walk(schema["additionalProperties"])

    walk(SCHEMA)
    return found


def parse_value(text: str):
    """A YAML value as a doc writes it; a template (``<recipe>``) or prose stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config_key_problems(text: str) -> list[str]:
    bad = []
    tops = set(SCHEMA["properties"])
    for span in spans(text):
        dotted = re.fullmatch(r"([a-z_]+)((?:\.[\w<>-]+)+)", span)
        if dotted and dotted.group(1) in tops and span.rsplit(".", 1)[1] not in FILE_SUFFIXES:
            bad += key_problems(span.split("."))
        # one `key: value` (a word, a quoted string or a flow collection), not a message
        pair = re.fullmatch(r"([a-z_]+): (\{.*\}|\[.*\]|\"[^\"]*\"|'[^']*'|[^\s:]+)", span)
        if pair and pair.group(1) not in NOT_CONFIG:
            key, value = (
                pair.group(1),
                yaml.safe_load(pair.group(2).replace("<", "'<").replace(">", ">'")),
            )
            if key in tops:
                bad += key_problems([key], value)
            elif key not in all_keys():
                bad.append(key)
            else:
                subs = all_keys()[key]
                if isinstance(value, dict):
                    if all(key_problems([str(k)], v, s) for s in subs for k, v in value.items()):
                        bad.append(span)
                elif all("enum" in s for s in subs) and not str(value).startswith("<"):
                    if not any(value in s["enum"] for s in subs):
                        bad.append(span)
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        config = parse_value(block)
        if isinstance(config, dict) and set(config) <= tops:
            bad += [p for k, v in config.items() for p in key_problems([k], v)]
    return bad


def test_named_config_keys_exist():
    for page in pages():
        bad = config_key_problems(page.read_text())
        assert not bad, problems(bad, page)


# ---- links, the index, references outside the repository ---------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    heads = re.findall(r"^#{1,6} (.+)$", prose(path.read_text()), re.M)
    return frozenset(slug(h) for h in heads)


def link_problem(source: Path, target: str) -> str | None:
    """None when a relative link (``file#anchor``) resolves from ``source``."""
    file, _, anchor = target.partition("#")
    path = (source.parent / file).resolve() if file else source
    if not path.exists():
        return target
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return target
    return None


def test_links_resolve():
    for page in pages():
        targets = re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text()))
        bad = [t for t in targets if "://" not in t and link_problem(page, t)]
        assert not bad, problems(bad, page)


def test_code_points_into_docs_that_exist():
    sources = [ROOT / "Snakefile", ROOT / "workflow_config.yaml", *ROOT.glob("rules/*.smk"),
               *ROOT.glob("config/*.yaml"), *ROOT.glob("bench/*"),
               *ROOT.glob("calex_steps/**/*.py"), *ROOT.glob("calex_steps/**/*.yaml")]  # fmt: skip
    for source in sources:
        for target in re.findall(r"\bdocs/[\w-]+\.md(?:#[\w-]+)?", source.read_text()):
            assert link_problem(ROOT / "x", target) is None, f"{source} links {target}"


def test_readme_indexes_every_page():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"README's docs index lacks docs/{page.name}"


def test_no_reference_to_a_spec_or_an_issue_tracker():
    places = [ROOT / "README.md", ROOT / "Snakefile", ROOT / "workflow_config.yaml"]
    for folder in ("docs", "config", "calex_steps", "bench", "rules", "tests"):
        places += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix != ".pyc"]
    pattern = re.compile(r"\bSPEC\b|SPEC section|\b[Ii]ssue[- ][0-9]")
    for path in places:
        if path.name == "test_docs.py" or path.suffix in (".png", ".pdf"):
            continue
        hits = [line for line in path.read_text().splitlines() if pattern.search(line)]
        assert not hits, f"{path.relative_to(ROOT)}: {hits}"


# ---- configurations said to differ only in some keys ---------------------------------------


def merged(configfile: str) -> dict:
    """The configuration a run with ``--configfile configfile`` gets (unvalidated)."""
    base = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())

    def merge(a, b):
        for key, value in b.items():
            if isinstance(value, dict) and isinstance(a.get(key), dict):
                merge(a[key], value)
            else:
                a[key] = value

    if configfile != "workflow_config.yaml":
        merge(base, yaml.safe_load((ROOT / configfile).read_text()))
    return base


def flat(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


DIFFERS = re.compile(
    rf"`({CONFIG_FILE})` differs from `({CONFIG_FILE})` only in ((?:`[\w.<>-]+`(?:, | and )?)+)"
)


def test_configs_said_to_differ_only_in_some_keys_do():
    claims = 0
    for page in pages():
        text = " ".join(prose(page.read_text()).split())
        for a, b, listed in DIFFERS.findall(text):
            claims += 1
            keys = re.findall(r"`([\w.<>-]+)`", listed)
            left, right = flat(merged(a)), flat(merged(b))
            differ = {k for k in left.keys() | right.keys() if left.get(k, 0j) != right.get(k, 0j)}
            covered = lambda path, key: path == key or path.startswith(key + ".")  # noqa: E731
            unlisted = sorted(p for p in differ if not any(covered(p, k) for k in keys))
            same = [k for k in keys if not any(covered(p, k) for p in differ)]
            where = f"{page.relative_to(ROOT)}: {a} against {b}"
            assert not unlisted, f"{where} also differs in {unlisted}"
            assert not same, f"{where} does not differ in {same}"
        for sentence in re.split(r"(?<=[.!?])\s", text):
            named = set(re.findall(CONFIG_FILE, sentence))
            loose = re.search(r"same study|equivalent|identical|the same as", sentence)
            if len(named) > 1 and loose and not DIFFERS.search(sentence):
                pytest.fail(f"{page.relative_to(ROOT)} says {sorted(named)} are alike without "
                            f"'differs from ... only in ...': {sentence}")  # fmt: skip
    assert claims >= 1, "no page states how a shipped configuration differs from another"


# ---- the API examples, the citation --------------------------------------------------------


def test_api_examples_run():
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)  # fmt: skip
    assert result.attempted > 0 and result.failed == 0


def test_citation_matches_the_package_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert str(cff["version"]) == project["version"] and cff["license"] == project["license"]
    paper = cff["references"][0]
    readme = (ROOT / "README.md").read_text()
    bibtex = re.search(r"```bibtex\n(.*?)```", readme, re.S).group(1)
    assert f"doi     = {{{paper['doi']}}}" in bibtex
    assert (
        f"volume  = {{{paper['volume']}}}" in bibtex and f"pages   = {{{paper['start']}}}" in bibtex
    )


# ---- job counts, from dry runs (slow) ------------------------------------------------------


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """``configfile`` -> (rule -> jobs of a fresh dry run, rules holding a gpu resource).
    The datasets and checkpoints a configuration names are stand-in empty files: a dry run
    only checks that they exist."""
    cached = {}

    def run(configfile: str):
        if configfile in cached:
            return cached[configfile]
        workdir = copy_workflow(tmp_path_factory.mktemp("dry") / "wf")
        (workdir / configfile).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / configfile, workdir / configfile)
        config = merged(configfile)
        for name in config["study"]["datasets"]:
            settings = config["datasets"][name]
            root = workdir / settings.get("root", "")
            if settings["source"] != "synthetic":
                for path in _required_files(settings["source"], root, {**settings, "root": root}):
                    path.mkdir(parents=True, exist_ok=True)
        for name in config["study"]["backbones"]:
            if weights := config["backbones"][name].get("checkpoint"):
                (workdir / weights).parent.mkdir(parents=True, exist_ok=True)
                (workdir / weights).touch()
        cmd = [SNAKEMAKE, "-n", "--cores", "2", "--configfile", configfile]
        out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{configfile}: {out.stderr[-3000:]}"
        gpu = set(re.findall(r"rule (\w+):\n(?:    .*\n)*?    resources: [^\n]*\bgpu=", out.stdout))
        cached[configfile] = (scheduled(out.stdout), gpu)
        return cached[configfile]

    return run


def quoted_counts(text: str) -> list[tuple[str, str, int]]:
    """(config, rules or '' for the total, count) for every job count a page gives:
    'N jobs' in prose after a configuration named earlier in its section, table rows
    naming a configuration under a 'jobs' column, and per-stage tables ('stage', 'jobs')
    of the configuration named last before them."""
    out = []
    for section in re.split(r"^#+ ", prose(text), flags=re.M):
        for match in re.finditer(r"(?<![\w.])(\d[\d,]*) jobs\b", section):
            line_start = section.rfind("\n", 0, match.start()) + 1
            named = re.findall(CONFIG_FILE, section[: match.start()])
            if named and not section[line_start:].startswith("|"):
                out.append((named[-1], "", int(match.group(1).replace(",", ""))))
        for table in re.finditer(r"(?:^\|.*\n)+", section, re.M):
            rows = [[c.strip() for c in r.strip().strip("|").split("|")]
                    for r in table.group(0).splitlines()]  # fmt: skip
            if "jobs" not in rows[0]:
                continue
            col = rows[0].index("jobs")
            before = re.findall(CONFIG_FILE, section[: table.start()])
            for row in rows[2:]:
                named = re.findall(CONFIG_FILE, row[0])
                if named:
                    out.append((named[0], "", int(row[col])))
                elif rows[0][0] == "stage" and before and "`" in row[0]:
                    out.append(
                        (before[-1], " ".join(re.findall(r"`(\w+)`", row[0])), int(row[col]))
                    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_job_counts_match_a_dry_run(page, dry_runs):
    for configfile, rules, said in quoted_counts(page.read_text()):
        counts, _ = dry_runs(configfile)
        real = sum(counts.values()) if not rules else sum(counts.get(r, 0) for r in rules.split())
        what = f"{rules} jobs" if rules else "jobs in all (Snakemake's total)"
        assert said == real, f"{page.relative_to(ROOT)} says {configfile} has {said} {what}; {real}"


@pytest.mark.slow
def test_the_gpu_rules_are_the_ones_listed(dry_runs):
    text = " ".join((ROOT / "docs" / "running.md").read_text().split())
    match = re.search(r"(\w+) rules declare a `gpu` resource: ((?:`\w+`(?:, | and )?)+)", text)
    assert match, "docs/running.md no longer lists the rules that hold a gpu"
    listed = set(re.findall(r"`(\w+)`", match.group(2)))
    real = set().union(
        *(dry_runs(c)[1] for c in ("config/demo.yaml", "config/cifar10_resnet56.yaml"))
    )
    # one rule per exit count (train_joint_3, train_joint_6, ...): the page names the family
    real = {re.sub(r"_\d+$", "", name) for name in real}
    assert listed == real
    numbers = "zero one two three four five six seven eight nine ten eleven twelve".split()
    assert numbers.index(match.group(1).lower()) == len(real)


@pytest.mark.slow
def test_cluster_doc_counts_the_jobs_of_the_tiny_slurm_study(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    write_tiny(workdir, {"study.recipes": ["calexnet"]})  # what test_slurm.py submits
    text = " ".join((ROOT / "docs" / "cluster.md").read_text().split())
    match = re.search(r"A dry run counts (\d+) jobs, and (\d+) of them go to SLURM", text)
    assert match, "docs/cluster.md no longer says how many jobs the tiny SLURM study has"
    cmd = [SNAKEMAKE, "-n", "--cores", "2", "--configfile", "tiny.yaml"]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    counts = scheduled(out.stdout)
    assert int(match.group(1)) == sum(counts.values())
    assert int(match.group(2)) == sum(counts.values()) - counts["all"]


# ---- file attributes (slow: the tiny run) --------------------------------------------------


def listed_attributes(section: str) -> set[str]:
    """The backquoted names of the first 'Root attributes:' paragraph of a formats.md section."""
    text = (ROOT / "docs" / "formats.md").read_text().split(f"## `{section}`")[1]
    paragraph = text.split("Root attributes:")[1].split("\n\n")[0]
    names_only = re.sub(r"\([^)]*\)", "", paragraph)  # parentheses explain values
    return set(re.findall(r"`([a-z_0-9]+)`", names_only))


@pytest.mark.slow
@pytest.mark.parametrize(
    "section, path",
    [
        ("results/{d}/prepared.h5", "results/synthetic/prepared.h5"),
        ("results/{d}/{b}/features.h5", "results/synthetic/r18tiny/features.h5"),
    ],
)
def test_formats_doc_lists_the_root_attributes_files_have(tiny_run, section, path):
    with h5py.File(tiny_run / path, "r") as f:
        actual = set(f.attrs)
    listed = listed_attributes(section)
    assert listed - actual == set(), f"docs/formats.md lists attributes {path} does not have"
    assert actual - listed == set(), f"{path} has attributes docs/formats.md does not list"
