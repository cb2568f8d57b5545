"""Each rule's code inputs, derived from the import graph of the stage module it runs.

``module_files("calex_steps.stages.train_branch", root)`` walks the ``import``
statements of that module (at any depth, function-level imports included)
and of every calex module it reaches, and returns their files, plus the
``__init__.py`` of every package on the way. A changed file therefore reruns
exactly the rules whose code imports it.

Files that cannot change a result are left out (``PLUMBING``): the error
type, the entry-point plumbing (argument parsing, logging, exit codes, the
child process a stage that writes HDF5 runs in, the check of a stage's settings
against the configuration schema), how files are written atomically and opened
(``io``), and two package files that
hold no code (the top-level ``__init__``, the version string; the stages'
``__init__``, a docstring). Editing them reruns nothing; a test keeps them
free of anything that could change an output.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "calex_steps"
PLUMBING = (
    "calex_steps/__init__.py",
    "calex_steps/errors.py",
    "calex_steps/cli.py",
    "calex_steps/io.py",
    "calex_steps/isolation.py",
    "calex_steps/schema.py",
    "calex_steps/stages/__init__.py",
)


def module_path(module: str, root: Path) -> Path | None:
    """The file of a dotted calex module below ``root`` (a module or a package), else None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """Dotted names a file imports from the package (``from a import b`` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@functools.cache
def module_files(module: str, root: str | Path) -> tuple[str, ...]:
    """Sorted files (relative to ``root``'s parent, i.e. ``calex_steps/...``) that running
    ``module`` imports, plumbing excluded."""
    root = Path(root)
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for part in _with_parents(name):
            path = module_path(part, root.parent)
            if path is None or path in seen:
                continue  # a name imported from a module, not a module itself
            seen.add(path)
            todo.extend(_imported(path))
    files = {p.relative_to(root.parent).as_posix() for p in seen}
    if not any(f.startswith(module.replace(".", "/")) for f in files):
        raise ValueError(f"module {module} has no file under {root}")
    return tuple(sorted(files - set(PLUMBING)))
