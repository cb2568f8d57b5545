"""Run an exported calex cascade (``cascade_m<margin>.onnx``) with ONNX Runtime alone.

Needs numpy, onnxruntime and Pillow only: no PyTorch and no calex. Import it, or copy
this one file beside the model and run it:

    python onnx_runner.py --model cascade_m0.2.onnx cat.png dog.jpg

    from onnx_runner import OnnxCascade
    cascade = OnnxCascade("cascade_m0.2.onnx")
    pred, exit_branch, confidence = cascade(images)  # uint8 N×H×W×3 RGB

The graph does the whole early exit itself (docs/deploy.md): this file only reads
images, feeds them and names the answers. ``exit_branch`` is 0..L-1 for a branch and L
for the backbone; ``confidence`` is the exit signal at the prediction, or the
classifier's softmax probability. Each image file is converted to RGB and resized to
the model's input size and centre-cropped, as ``python -m calex_steps.predict`` decodes
it; one line per image: ``path<TAB>class<TAB>branch l | backbone<TAB>confidence``.

The model file is checked before ONNX Runtime reads it: export_onnx records the SHA-256
of the file's bytes in the metadata entry ``calex.sha256`` (the digest taken with that
entry's 64 characters all ``0``), and the ``calex`` metadata must name the classes, the
branch count and the input size. A damaged or foreign file is one line, never a
traceback or a wrong answer (docs/formats.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

META_KEY = "calex"  # the model's metadata entry written by export_onnx
SHA_KEY = "calex.sha256"  # the metadata entry holding the file's SHA-256
UNSEALED = "0" * 64  # the digest's value while the digest is taken
# how protobuf stores the entry: key (field 1, 12 bytes), then value (field 2, 64 bytes)
SHA_ENTRY = b"\x0a\x0c" + SHA_KEY.encode() + b"\x12\x40"
FIX = "export it again (rule export_onnx)"


class RunnerError(Exception):
    """A problem the user can fix (a missing file, a model that is not a calex cascade)."""


def _digest_at(data: bytes) -> int | None:
    """Where the recorded digest's 64 characters start in a serialized model, or None
    when the model records none (or more than one)."""
    if data.count(SHA_ENTRY) != 1:
        return None
    return data.index(SHA_ENTRY) + len(SHA_ENTRY)


def file_digest(data: bytes, at: int) -> str:
    """The SHA-256 of a serialized model with its recorded digest (at ``at``) unsealed."""
    return hashlib.sha256(data[:at] + UNSEALED.encode() + data[at + 64 :]).hexdigest()


def seal(data: bytes) -> bytes:
    """A serialized model whose ``calex.sha256`` entry holds ``UNSEALED``, with the entry
    set to the file's digest (what export_onnx writes)."""
    at = _digest_at(data)
    if at is None or data[at : at + 64] != UNSEALED.encode():
        raise RunnerError(f"the model has no unsealed {SHA_KEY} entry to record its digest in")
    return data[:at] + file_digest(data, at).encode() + data[at + 64 :]


def verified_bytes(path: str | Path) -> bytes:
    """The bytes of a model file whose recorded SHA-256 matches them (module docstring)."""
    if not Path(path).is_file():
        raise RunnerError(f"model file {path} does not exist; pass the .onnx export_onnx wrote")
    data = Path(path).read_bytes()
    at = _digest_at(data)
    if at is None:
        raise RunnerError(
            f"{path} carries no SHA-256 ({SHA_KEY}): it is not a cascade written by this "
            f"calex version, or not a calex cascade at all; {FIX}"
        )
    if data[at : at + 64].decode("ascii", "replace") != file_digest(data, at):
        raise RunnerError(
            f"{path} is damaged: its contents do not match the SHA-256 recorded at export; {FIX}"
        )
    return data


def session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of ``path``, checked first (``verified_bytes``;
    ``threads`` 0 = ONNX Runtime's default)."""
    data = verified_bytes(path)
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunnerError(f"{path} is not a loadable ONNX model ({first[:120]}); {FIX}") from exc


def cascade_meta(text: str | None, path: str | Path) -> dict:
    """The ``calex`` metadata of a model, checked for what the runner reads."""
    if text is None:
        raise RunnerError(f"{path} is an ONNX model but not a calex cascade; {FIX}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunnerError(f"{path} has unreadable calex metadata ({exc}); {FIX}") from exc
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunnerError(f"{path}'s calex metadata lacks a list of class_names; {FIX}")
    for key in ("num_branches", "input_size"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RunnerError(f"{path}'s calex metadata has {key} {value!r}, not a count; {FIX}")
    return meta


class OnnxCascade:
    """An exported cascade: ``cascade(images)`` -> (pred, exit_branch, confidence) arrays."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.session = session(path, threads)
        found = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta = cascade_meta(found, path)
        self.class_names = list(self.meta["class_names"])
        self.num_branches = int(self.meta["num_branches"])
        self.input_size = int(self.meta["input_size"])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 N×S×S×3 RGB images -> (pred int64, exit_branch int64, confidence float32)."""
        images = np.asarray(images)
        size = self.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise RunnerError(
                f"images must be uint8 N×{size}×{size}×3 RGB, got {images.dtype} of shape "
                f"{images.shape}; read files with read_image"
            )
        pred, exit_branch, confidence = self.session.run(None, {"images": images})
        return pred, exit_branch, confidence


def read_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 size×size×3 RGB array of an image file of any size or mode: the shorter side
    resized to ``size`` (bilinear, antialiased), the centre square kept; 16- and 32-bit
    grey keep their top 8 bits (as calex's ``data.image_folder.decode_file``)."""
    from PIL import Image

    if not Path(path).is_file():
        raise RunnerError(f"image {path} does not exist; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith(("I", "F")):
                wide = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((wide / 256 if wide.max() > 255 else wide).astype(np.uint8))
            rgb = im.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise RunnerError(f"{path} is not a readable image ({type(exc).__name__})") from exc
    w, h = rgb.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        rgb = rgb.resize(new, Image.BILINEAR, reducing_gap=None)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)


def exit_label(exit_branch: int, num_branches: int) -> str:
    """``branch l`` (1-based) for a branch exit, ``backbone`` for the end of the cascade."""
    return "backbone" if exit_branch >= num_branches else f"branch {exit_branch + 1}"


def predict_lines(cascade: OnnxCascade, paths: list[str], batch_size: int = 256) -> list[str]:
    """One line per image path (module docstring), ``batch_size`` images per run."""
    lines = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images = np.stack([read_image(p, cascade.input_size) for p in chunk])
        pred, exit_branch, conf = cascade(images)
        lines += [
            f"{path}\t{cascade.class_names[int(p)]}\t"
            f"{exit_label(int(e), cascade.num_branches)}\t{float(c):.4f}"
            for path, p, e, c in zip(chunk, pred, exit_branch, conf, strict=True)
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print one line per image; 1 with one ``error: ...`` line on a problem."""
    p = argparse.ArgumentParser(prog="onnx_runner.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="cascade_m<margin>.onnx from export_onnx")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("images", nargs="+", help="image files (any size; resized to the model's)")
    args = p.parse_args(argv)
    try:
        lines = predict_lines(OnnxCascade(args.model, args.threads), args.images)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
