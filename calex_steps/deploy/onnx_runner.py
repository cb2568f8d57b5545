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
the model's input size (bilinear), as ``python -m calex_steps.predict`` does; one line
per image: ``path<TAB>class<TAB>branch l | backbone<TAB>confidence``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

META_KEY = "calex"  # the model's metadata entry written by export_onnx


class RunnerError(Exception):
    """A problem the user can fix (a missing file, a model that is not a calex cascade)."""


def session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of ``path`` (``threads`` 0 = ONNX Runtime's default)."""
    if not Path(path).is_file():
        raise RunnerError(f"model file {path} does not exist; pass the .onnx export_onnx wrote")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunnerError(f"{path} is not a loadable ONNX model ({first[:120]})") from exc


class OnnxCascade:
    """An exported cascade: ``cascade(images)`` -> (pred, exit_branch, confidence) arrays."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.session = session(path, threads)
        found = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if found is None:
            raise RunnerError(f"{path} is an ONNX model but not a calex cascade; rerun export_onnx")
        self.meta = json.loads(found)
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
    """uint8 size×size×3 RGB array of an image file of any size or mode."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise RunnerError(f"image {path} does not exist; check the path")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise RunnerError(f"{path} is not a readable image ({type(exc).__name__})") from exc


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
