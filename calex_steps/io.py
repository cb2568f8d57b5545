"""Small I/O helpers shared by every stage: atomic writes, hashes, logging, devices."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class CalexError(RuntimeError):
    """An error a user can fix; entry points print it as one line and exit 1."""


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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def parse_json_arg(text: str) -> dict:
    """Parse a ``--settings`` JSON argument, with a clear error on bad input."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalexError(f"--settings is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CalexError("--settings must be a JSON object")
    return value


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


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` from ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CalexError(
            f"device '{name}' was requested but CUDA is not available; "
            "set 'device: cpu' or 'device: auto' in the configuration"
        )
    return device


def add_runtime_args(parser) -> None:
    """The ``--device`` and ``--threads`` flags every torch stage takes."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def run_main(func, argv=None) -> int:
    """Run an entry point's body; turn a ``CalexError`` into one line on stderr."""
    try:
        func(argv)
    except CalexError as exc:
        print(f"calex error: {exc}", file=sys.stderr)
        return 1
    return 0
