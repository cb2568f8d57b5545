"""How files are written and opened, never what they hold: atomic replacement, a full disk
as one line, HDF5 files opened with a clear error.

Nothing here can change a result, so the workflow does not rerun anything when
this module is edited (``calex_steps.workflow.code_deps``); what decides the
bytes of an output is ``calex_steps.data.files``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from calex_steps.errors import CalexError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left
    untouched, so an earlier valid result is never destroyed. A full disk
    becomes a one-line ``CalexError`` that says so.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(exc):
            kept = "the earlier file is kept" if final.exists() else "nothing was written"
            raise CalexError(
                f"no space left on the device while writing {final} ({kept}); "
                "free some space and run again"
            ) from exc
        raise


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an exception (or one it wraps) is ENOSPC; h5py keeps errno in its OSError."""
    while exc is not None:
        if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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
