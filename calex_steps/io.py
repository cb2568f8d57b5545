"""How files are written and opened, never what they hold: atomic replacement, a full disk
as one line naming the file system, HDF5 files opened with a clear error.

Nothing here can change a result, so the workflow does not rerun anything when
this module is edited (``calex_steps.workflow.code_deps``); what decides the
bytes of an output is ``calex_steps.data.files``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

from calex_steps.errors import CalexError

MB = 1e6


def existing_folder(path: str | os.PathLike) -> Path:
    """The nearest folder of ``path`` that exists (the output's folder may not yet)."""
    folder = Path(path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    return folder


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system ``path`` is (or would be) written to."""
    folder = existing_folder(path)
    while not os.path.ismount(folder):
        folder = folder.parent
    return folder


def describe_file_system(path: str | os.PathLike) -> str:
    """``the file system mounted at M (S MB, F MB free)`` for the file system of ``path``."""
    usage = shutil.disk_usage(existing_folder(path))
    return (
        f"the file system mounted at {mount_point(path)} "
        f"({usage.total / MB:.1f} MB, {usage.free / MB:.1f} MB free)"
    )


def require_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse, before anything is written, an output of about ``needed`` bytes that the
    file system of ``path`` cannot hold (one line naming it, the size and the free space)."""
    if needed > free_bytes(path):
        raise CalexError(
            f"writing {what} ({path}) needs about {needed / MB:.1f} MB but "
            f"{describe_file_system(path)} cannot hold it; nothing was written; free space "
            "there or write the results elsewhere"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left
    untouched, so an earlier valid result is never destroyed. A write that runs
    out of space (a full file system, or the process's file size limit) becomes
    a one-line ``CalexError`` naming the file system.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        problem = space_problem(exc, final)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if problem:
            kept = "the earlier file is kept" if final.exists() else "nothing was written"
            fix = space_fix(problem)
            raise CalexError(f"{problem} while writing {final} ({kept}); {fix}") from exc
        raise


_ABANDONED: list = []
"""HDF5 files whose write failed, kept referenced so that nothing closes them."""


@contextlib.contextmanager
def hdf5_output(tmp: str | os.PathLike):
    """``h5py.File(tmp, "w")``, closed when the block ends, except after running out of space.

    Closing a file whose write failed (a full disk) makes HDF5 flush it again, which
    can crash the process; such a file is left open until the process ends, and
    ``atomic_path`` deletes it at once. A stage that writes HDF5 runs in a child
    process that ends right after the error (``calex_steps.isolation``).
    """
    import h5py

    handle = h5py.File(tmp, "w")
    try:
        yield handle
        handle.flush()  # the cached chunks and metadata: a full disk fails here, not in close
    except BaseException as exc:
        if space_problem(exc, tmp) is None:  # any other failure: the file closes as usual
            with contextlib.suppress(Exception):
                handle.close()
        else:
            _ABANDONED.append(handle)
        raise
    handle.close()


ALMOST_FULL = 1 << 20
"""Free bytes under which a failed write is blamed on the full file system (torch's
archive writer does not say why a write failed)."""


def space_problem(exc: BaseException | None, path: str | os.PathLike) -> str | None:
    """What ran out when ``exc`` (or an exception it wraps) stopped a write to ``path``:
    ``no space left on <file system> (size, free)``, the process's file size limit, or
    None when the write failed for another reason."""
    while exc is not None:
        number, text = getattr(exc, "errno", None), str(exc)
        if number == errno.ENOSPC or "No space left on device" in text or "errno = 28," in text:
            return f"no space left on {describe_file_system(path)}"
        if number == errno.EFBIG or "File too large" in text or "errno = 27," in text:
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] / MB
            return f"the file size limit of this process (ulimit -f: {limit:.1f} MB) was reached"
        if "file write failed" in text and free_bytes(path) < ALMOST_FULL:
            return f"no space left on {describe_file_system(path)}"
        exc = exc.__cause__ or exc.__context__
    return None


def space_fix(problem: str) -> str:
    """How to get past a ``space_problem``."""
    if problem.startswith("the file size limit"):
        return "raise the limit (ulimit -f) and run again"
    return "free some space there and run again"


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system ``path`` is (or would be) written to."""
    return shutil.disk_usage(existing_folder(path)).free


def open_h5(path: str | os.PathLike, rule: str):
    """Open an HDF5 file read-only; a missing, truncated or foreign file is a one-line error."""
    import h5py

    if not Path(path).is_file():
        raise CalexError(f"'{path}' does not exist; run the {rule} rule to write it")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[-1].rstrip(")") if "(" in str(exc) else str(exc)
        raise CalexError(
            f"'{path}' is not a readable HDF5 file ({reason}); delete it and rerun the {rule} rule"
        ) from exc
