"""What the bytes of an output file are: fixed CSV formatting, uncompressed npz, UTF-8 text,
and file hashes (recorded as provenance). Every writer goes through ``io.atomic_path``."""

from __future__ import annotations

import hashlib
import os

from calex_steps.io import atomic_path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_npz(path: str | os.PathLike, arrays: dict) -> None:
    """Write arrays to an uncompressed ``.npz`` atomically (through a file handle, because
    ``np.savez`` would append ``.npz`` to the temporary name)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def save_csv(frame, path: str | os.PathLike, float_format: str, na_rep: str = "") -> None:
    """Write a DataFrame without its index, with a fixed float format and ``\\n`` line ends
    (the same numbers give byte-identical files), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(
            tmp, index=False, float_format=float_format, na_rep=na_rep, lineterminator="\n"
        )


def save_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
