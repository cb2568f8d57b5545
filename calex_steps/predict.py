"""Classify image files with an exported cascade (``export_cascade``).

    python -m calex_steps.predict --model cascade_m0.2.pt cat.png dog.jpg

Each image is read with PIL, converted to RGB and resized to the artifact's
input size (its metadata's ``input_size``, bilinear); all images run as one batch. One line per
image: ``path<TAB>class<TAB>branch l | backbone<TAB>confidence``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.artifact import load_artifact
from calex_steps.cli import run_main
from calex_steps.errors import CalexError

DEFAULT_SIZE = 32


def read_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 size×size×3 RGB array of an image file of any size or mode."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise CalexError(f"image {path} does not exist; check the path")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise CalexError(f"{path} is not a readable image ({type(exc).__name__})") from exc


def exit_label(exit_branch: int, num_branches: int) -> str:
    """``branch l`` (1-based) for a branch exit, ``backbone`` for the end of the cascade."""
    return "backbone" if exit_branch >= num_branches else f"branch {exit_branch + 1}"


def predict_lines(model: torch.jit.ScriptModule, paths: list[str]) -> list[str]:
    """One output line per image path (see the module docstring)."""
    size = int(json.loads(model.meta_json).get("input_size", DEFAULT_SIZE))
    images = torch.from_numpy(np.stack([read_image(p, size) for p in paths]))  # N×S×S×3
    with torch.inference_mode():
        pred, exit_branch, conf = model(images)
    names, count = list(model.class_names), int(model.num_branches)
    return [
        f"{path}\t{names[int(p)]}\t{exit_label(int(e), count)}\t{float(c):.4f}"
        for path, p, e, c in zip(paths, pred, exit_branch, conf, strict=True)
    ]


def run_predict(model_path: str | Path, images: list[str]) -> list[str]:
    """Load the artifact, classify ``images``, print and return the lines."""
    lines = predict_lines(load_artifact(model_path), [str(p) for p in images])
    for line in lines:
        print(line)
    sys.stdout.flush()
    return lines


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(prog="python -m calex_steps.predict", description=__doc__)
    p.add_argument("--model", required=True, help="cascade artifact from export_cascade")
    p.add_argument("images", nargs="+", help="images (any size; resized to the model's input size)")
    return p


def _main(argv) -> None:
    """Parse the arguments and print the predictions."""
    args = build_parser().parse_args(argv)
    run_predict(args.model, args.images)


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
