"""The plumbing every stage entry point shares: arguments, logging, device, exit codes.

A stage module is ``build_parser()`` + ``run_<stage>(...)`` + ``main(argv)``;
``main`` is one call to :func:`stage_main`, which parses the arguments, sets
up logging to stderr (the rule redirects it to its log), applies
``--threads`` and the allocator setting (:func:`keep_freed_memory`), logs the
command line for provenance and turns a ``CalexError`` into one line and exit
code 1.

Nothing here can change a result, so the workflow does not rerun anything
when this module is edited (``calex_steps.workflow.code_deps``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import shlex
import sys
from collections.abc import Callable

from calex_steps.errors import CalexError
from calex_steps.isolation import can_isolate, run_isolated
from calex_steps.schema import validate_settings


def setup_logging() -> logging.Logger:
    """Log to stderr (the rule redirects it to its log file), one line per event."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger("calex")


def parse_json_arg(text: str, flag: str = "--settings", schema: str | tuple[str, ...] = ()):
    """Parse a JSON argument (``--settings``), with a clear error on bad input.

    Without ``schema`` it must be a JSON object. With it, the value is validated
    against that part of the configuration schema (``calex_steps.schema``: e.g.
    ``"probe"``, ``"recipes.*"``, or several parts), so a stage called by hand stops
    on a wrong type or an unknown key with the schema's one line.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalexError(f"{flag} is not valid JSON ({exc})") from exc
    if schema:
        validate_settings(value, schema, flag)
    elif not isinstance(value, dict):
        raise CalexError(f"{flag} must be a JSON object")
    return value


def stage_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m calex_steps.stages.<module>``, with the docstring as help."""
    return argparse.ArgumentParser(
        prog=f"python -m calex_steps.stages.{module}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` and ``--threads`` flags every torch stage takes."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


# glibc mallopt parameters; 32 MiB is the largest mmap threshold glibc accepts on 64-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_BLOCK_BYTES = 32 * 1024 * 1024
NO_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse; True if applied.

    By default glibc hands a freed block of more than a few MiB back to the operating
    system and page-faults it in again at the next allocation. A CNN on the CPU frees
    and reallocates activations of that size at every layer, so a whole backbone at
    batch 256 ran up to 2x slower than its segments timed alone, and by a different
    amount at every run (docs/performance.md). Freed memory stays in the process
    instead, which does not raise the peak. Set ``CALEX_KEEP_FREED_MEMORY=0`` to keep
    glibc's default; other C libraries (macOS, musl) are left alone.
    """
    if os.environ.get("CALEX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, NO_TRIM)
    )


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` from ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if not isinstance(name, str):
        return name  # already a torch.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CalexError(
            f"device '{name}' was requested but CUDA is not available; "
            "set 'device: cpu' or 'device: auto' in the configuration"
        )
    return device


def run_main(func: Callable[[list[str] | None], None], argv=None) -> int:
    """Run an entry point's body; turn a ``CalexError`` into one line on stderr."""
    try:
        func(argv)
    except CalexError as exc:
        print(f"calex error: {exc}", file=sys.stderr)
        return 1
    return 0


def stage_main(
    build_parser: Callable[[], argparse.ArgumentParser],
    body: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
    hdf5_outputs: Callable[[argparse.Namespace], list[str]] | None = None,
) -> int:
    """Parse ``argv``, log the command, apply ``--threads``, run ``body(args)``.

    Returns 0 on success and 1 on a ``CalexError`` (printed as one line). A stage
    that writes HDF5 files names them (``hdf5_outputs(args)``); run as a command
    (``argv`` None), its body then runs in a child process (``calex_steps.isolation``),
    so that running out of space while writing is one line whatever HDF5 does.
    """

    def parse(args_list: list[str] | None) -> argparse.Namespace:
        log = setup_logging()
        args = build_parser().parse_args(args_list)
        shown = sys.argv[1:] if args_list is None else args_list
        log.info("%s %s", build_parser().prog, shlex.join(str(a) for a in shown))
        keep_freed_memory()
        return args

    def work(args: argparse.Namespace) -> None:
        if getattr(args, "threads", 0):
            set_threads(args.threads)
        body(args)

    if argv is None and hdf5_outputs is not None and can_isolate():
        args = parse(None)
        return run_isolated(lambda: work(args), hdf5_outputs(args))
    return run_main(lambda args_list: work(parse(args_list)), argv)
