"""A stage that writes HDF5 runs in a child process, so a failed write is one line.

After a write fails for lack of space, the HDF5 library keeps trying to flush the
broken file: every h5py object freed afterwards reports the failed write again,
and closing the file can crash the process (a segmentation fault) before the
temporary file is removed. ``run_isolated`` therefore runs the stage's work in a
forked child and waits for it. The child prints its one ``calex error:`` line
and ends at once (``os._exit``, skipping the interpreter's clean-up); the
repeated reports of freed HDF5 objects are dropped when they are about the full
disk. Whatever way the child ends, the parent removes the child's temporary
outputs (``<output>.tmp-<child pid>``), so the earlier outputs stay as they were,
and when the child was killed by a signal the parent prints the one line.

Nothing here can change a result (``calex_steps.workflow.code_deps``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from calex_steps.errors import CalexError
from calex_steps.io import ALMOST_FULL, describe_file_system, free_bytes, space_fix, space_problem

PR_SET_PDEATHSIG = 1


def can_isolate() -> bool:
    """Whether this platform can fork (Linux, macOS; not Windows)."""
    return hasattr(os, "fork")


def _die_with_parent() -> None:
    """Linux: end the child when the parent dies (a killed job leaves no writer behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Reporter:
    """The child's side of a pipe: the first sign that a write ran out of space (the
    text of ``io.space_problem``) goes to the parent, which then words the line if
    HDF5 crashes the child afterwards. The reports HDF5 objects print when freed after
    such a write (Cython hands them to ``sys.excepthook``) are dropped; any other
    report is printed as usual."""

    def __init__(self, fd: int, where: Path) -> None:
        self.fd, self.where, self.sent = fd, where, False

    def problem(self, exc: BaseException | None) -> str | None:
        found = space_problem(exc, self.where)
        if found and not self.sent:
            with contextlib.suppress(OSError):
                os.write(self.fd, found.encode()[:4000])
            self.sent = True
        return found

    def excepthook(self, kind, value, tb) -> None:
        if not self.problem(value):
            sys.__excepthook__(kind, value, tb)

    def unraisablehook(self, unraisable) -> None:
        if not self.problem(unraisable.exc_value):
            sys.__unraisablehook__(unraisable)


def _child(work: Callable[[], object], reporter: _Reporter) -> None:
    """Run ``work`` in the child and end the process with its status at once.

    The process ends inside the ``except`` block, while the exception still holds the
    frames of the failed write: leaving the block would free the HDF5 objects, whose
    clean-up after a failed write is what crashes.
    """
    _die_with_parent()
    sys.excepthook, sys.unraisablehook = reporter.excepthook, reporter.unraisablehook
    try:
        work()
    except CalexError as exc:
        reporter.problem(exc)
        print(f"calex error: {exc}", file=sys.stderr)
        _end(1)
    except SystemExit as exc:
        _end(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:  # an unexpected error: its traceback, as Python prints it
        traceback.print_exc()
        _end(1)
    _end(0)


def _end(status: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def leftovers(outputs: list[str | os.PathLike], pid: int) -> list[Path]:
    """The temporary files a writer with process id ``pid`` leaves beside ``outputs``."""
    found = [Path(out).with_name(f"{Path(out).name}.tmp-{pid}") for out in outputs]
    return [path for path in found if path.exists()]


def run_isolated(work: Callable[[], object], outputs: list[str | os.PathLike]) -> int:
    """Run ``work`` in a forked child; return its exit status (1 when a signal killed it).

    ``outputs``: the files the work writes through ``io.atomic_path``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(work, _Reporter(write_end, Path(outputs[0])))
    os.close(write_end)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:  # interrupted or terminated: stop the child, then clean up
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        _remove(leftovers(outputs, pid))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    reported = _read_report(read_end)
    code = os.waitstatus_to_exitcode(status)
    left = leftovers(outputs, pid)
    if code >= 0:
        _remove(left)
        return code
    where = Path(str(left[0]).rsplit(".tmp-", 1)[0]) if left else Path(outputs[0])
    problem = reported or _full_now(where)
    _remove(left)
    kept = "the earlier file is kept" if where.exists() else "nothing was written"
    crash = f"HDF5 then crashed the writing process ({signal.Signals(-code).name})"
    if problem:
        line = f"{problem} while writing {where} ({kept}; {crash}); {space_fix(problem)}"
    else:
        line = f"{crash} while writing {where} ({kept}); run it again"
    print(f"calex error: {line}", file=sys.stderr)
    return 1


def _read_report(fd: int) -> str:
    """What the child reported, without waiting: its DataLoader workers may still hold
    the pipe open for a moment after it ended."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 8192).decode(errors="replace")
    except BlockingIOError:
        return ""
    finally:
        os.close(fd)


def _terminated(signum, frame) -> None:
    """SIGTERM while waiting (a cancelled job): leave through ``run_isolated``'s clean-up."""
    raise SystemExit(128 + signum)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _full_now(path: Path) -> str | None:
    """``no space left on <file system>`` when the file system of ``path`` is full."""
    if free_bytes(path) < ALMOST_FULL:
        return f"no space left on {describe_file_system(path)}"
    return None
