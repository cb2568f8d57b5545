"""The exported cascade: a TorchScript file that loads with ``torch.jit.load`` alone.

``save_artifact`` scripts a ``CascadeModel`` and stores ``calex.json`` (its
meta) and ``calex.sha256`` (the SHA-256 of everything else the archive holds:
tensors, code, pickled structure) beside it; ``load_artifact`` checks the
archive's CRCs and that SHA-256 before TorchScript reads a byte of it, so a
damaged file is one line, never a traceback or a silent wrong answer.
docs/deploy.md explains why TorchScript and not ``torch.export``; docs/formats.md
describes the digest.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
import zlib
from pathlib import Path

import torch

from calex_steps.cascade.module import CascadeModel
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path

META_FILE = "calex.json"
SHA_FILE = "calex.sha256"
UNHASHED = ("extra/", ".data/")
"""Archive entries the digest leaves out: the extra files (the digest itself) and
``.data/serialization_id``, which differs at every save."""


def script_cascade(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """TorchScript of the cascade or one of its parts, in eval mode on its device (the
    deprecation warning of torch.jit is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.jit.script(model.eval())


def _jit_save(scripted: torch.jit.ScriptModule, where, extra: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, where, _extra_files=extra)


def archive_digest(source) -> tuple[str, str | None]:
    """(SHA-256 of the archive's hashed entries, the recorded ``calex.sha256`` or None).

    Every entry is read in full, so a damaged entry fails its CRC here
    (``zipfile.BadZipFile``). Entries are named without the archive's top folder,
    which TorchScript takes from the file name.
    """
    digest, recorded = hashlib.sha256(), None
    with zipfile.ZipFile(source) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename.split("/", 1)[-1]):
            name = info.filename.split("/", 1)[-1]
            data = archive.read(info)
            if name == f"extra/{SHA_FILE}":
                recorded = data.decode("ascii", "replace").strip()
            if name.startswith(UNHASHED):
                continue
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest(), recorded


def save_artifact(model: CascadeModel, out: str | Path) -> None:
    """Script ``model`` and save it atomically with ``calex.json`` and ``calex.sha256``.

    The digest is taken from a first save in memory and checked on the written file,
    so what is recorded is what the file holds.
    """
    scripted = script_cascade(model.cpu())
    buffer = io.BytesIO()
    _jit_save(scripted, buffer, {META_FILE: model.meta_json})
    buffer.seek(0)
    digest, _ = archive_digest(buffer)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:  # through a handle: a full disk is an OSError
            _jit_save(scripted, handle, {META_FILE: model.meta_json, SHA_FILE: digest})
        if archive_digest(tmp) != (digest, digest):
            raise CalexError(
                f"TorchScript wrote {out} differently from the copy its SHA-256 was taken "
                "from; nothing was written; report this with your torch version"
            )


def verify_artifact(path: str | Path) -> None:
    """Check the archive's CRCs and its recorded SHA-256; one line when either fails."""
    fix = "export it again (rule export_cascade)"
    try:
        digest, recorded = archive_digest(path)
    except zipfile.BadZipFile as exc:
        if not zipfile.is_zipfile(path):
            what = "not a TorchScript cascade (not a zip archive)"
            raise CalexError(f"{path} is {what}; {fix}") from None
        raise CalexError(f"{path} is damaged ({exc}); {fix}") from exc
    # zipfile raises NotImplementedError for a compression method it cannot read
    except (zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise CalexError(f"{path} is damaged ({type(exc).__name__}: {exc}); {fix}") from exc
    if recorded is None:
        raise CalexError(
            f"{path} carries no SHA-256 ({SHA_FILE}): it is not a cascade written by this "
            f"calex version, or not a cascade at all; {fix}"
        )
    if recorded != digest:
        raise CalexError(
            f"{path} is damaged: its contents do not match the SHA-256 recorded at export; {fix}"
        )


def load_artifact(path: str | Path) -> torch.jit.ScriptModule:
    """An exported cascade in eval mode, checked before loading (``verify_artifact``);
    a clear error when the file is missing, damaged or not one."""
    if not Path(path).is_file():
        raise CalexError(
            f"model file {path} does not exist; pass the artifact export_cascade wrote"
        )
    verify_artifact(path)
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.x; docs/deploy.md
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # TorchScript raises several error types for a bad archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CalexError(
            f"{path} is not a TorchScript cascade ({first[:120]}); rerun export_cascade"
        ) from exc
    if not hasattr(model, "class_names") or not hasattr(model, "meta_json"):
        raise CalexError(
            f"{path} is a TorchScript file but not a calex cascade; rerun export_cascade"
        )
    return model.eval()
