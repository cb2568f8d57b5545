"""Classify images with an exported cascade (``export_cascade``, or ``export_onnx`` with
``--runtime onnx``: run by ONNX Runtime through ``deploy.onnx_runner``).

    python -m calex_steps.predict --model cascade_m0.2.pt cat.png photos/ 'shots/*.jpg'
    python -m calex_steps.predict --runtime onnx --model cascade_m0.2.onnx cat.png photos/

Arguments are image files, folders (every image below them, recursively; hidden
files and folders skipped) and glob patterns (``**`` reaches into sub-folders),
classified in sorted order within each argument, ``--batch-size`` images at a
time. Each image is decoded as prepare_dataset decodes an image folder: RGB,
the shorter side resized to the artifact's input size (the size its backbone
was trained on, recorded at export), the centre square kept. One line per image,
``path<TAB>class<TAB>branch l | backbone<TAB>confidence``, or a CSV file with
``--out``. An image that cannot be read is skipped with one warning line naming
it; the exit status is then 2 (0 when every image was classified, 1 on an
error: no images, a missing path, a missing or damaged artifact).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.artifact import load_artifact
from calex_steps.cli import run_main
from calex_steps.data.image_folder import IMAGE_SUFFIXES, decode_file
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path

DEFAULT_SIZE = 32
BATCH_SIZE = 64
CSV_COLUMNS = ("path", "class", "exit", "confidence")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_below(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, hidden files and folders skipped, sorted."""
    found = (p for p in folder.rglob("*") if p.is_file() and _is_image(p))
    return sorted(p for p in found if not _hidden(p, folder))


def expand_inputs(arguments: list[str]) -> list[Path]:
    """The image files the arguments name, in order, each once (see the module docstring).

    A file is taken as given (an unreadable one is skipped later, with a warning); a
    folder or a glob pattern contributes its image files. An argument that names
    nothing, or a folder without images, is a one-line error.
    """
    paths: list[Path] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _images_below(path)
            if not found:
                raise CalexError(
                    f"folder {arg} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "pass a folder of images"
                )
        elif any(c in arg for c in "*?["):
            found = []
            for match in map(Path, sorted(glob.glob(arg, recursive=True))):
                if match.is_dir():
                    found += _images_below(match)
                elif _is_image(match):
                    found.append(match)
            if not found:
                raise CalexError(f"pattern {arg} matches no images; check the pattern")
        else:
            raise CalexError(f"image {arg} does not exist; check the path")
        paths += found
    return list(dict.fromkeys(paths))


def exit_label(exit_branch: int, num_branches: int) -> str:
    """``branch l`` (1-based) for a branch exit, ``backbone`` for the end of the cascade."""
    return "backbone" if exit_branch >= num_branches else f"branch {exit_branch + 1}"


def input_size(model: torch.jit.ScriptModule) -> int:
    """The image side the artifact's backbone expects (recorded at export)."""
    return int(json.loads(model.meta_json).get("input_size", DEFAULT_SIZE))


@dataclass
class Cascade:
    """An exported cascade as predict runs it, whatever the runtime: its input size, class
    names, branch count, and ``run(uint8 N×S×S×3) -> (pred, exit_branch, confidence)``."""

    size: int
    names: list[str]
    count: int
    run: Callable[[np.ndarray], tuple]


def torchscript_cascade(path: str | Path) -> Cascade:
    """The TorchScript artifact of ``export_cascade`` (checked before loading)."""
    model = load_artifact(path)

    def run(images: np.ndarray) -> tuple:
        with torch.inference_mode():
            return model(torch.from_numpy(images))

    return Cascade(input_size(model), list(model.class_names), int(model.num_branches), run)


def onnx_cascade(path: str | Path) -> Cascade:
    """The ONNX cascade of ``export_onnx``, run by ONNX Runtime (``deploy.onnx_runner``)."""
    try:
        from calex_steps.deploy import onnx_runner
    except ImportError as exc:
        fix = "pip install -e '.[deploy]'"
        raise CalexError(f"--runtime onnx needs {exc.name}, which is missing; {fix}") from exc
    try:
        cascade = onnx_runner.OnnxCascade(path)
    except onnx_runner.RunnerError as exc:
        raise CalexError(str(exc)) from exc
    return Cascade(cascade.input_size, cascade.class_names, cascade.num_branches, cascade)


RUNTIMES = {"torchscript": torchscript_cascade, "onnx": onnx_cascade}


def _decoded(paths: list[Path], size: int, warn) -> tuple[list[Path], np.ndarray | None]:
    """The readable images of ``paths`` (N×S×S×3 uint8); ``warn(path, reason)`` for the rest."""
    kept, images = [], []
    for path in paths:
        try:
            images.append(decode_file(str(path), size, size))
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
            warn(path, (str(exc).splitlines() or [type(exc).__name__])[0])
            continue
        kept.append(path)
    return kept, (np.stack(images) if images else None)


def classify(model: Cascade, paths: list[Path], batch_size: int,
             warn) -> Iterator[tuple[str, str, str, float]]:  # fmt: skip
    """``(path, class, exit, confidence)`` for every readable image, batch by batch."""
    for start in range(0, len(paths), batch_size):
        kept, images = _decoded(paths[start : start + batch_size], model.size, warn)
        if images is None:
            continue
        pred, exit_branch, conf = model.run(images)
        for path, p, e, c in zip(kept, pred, exit_branch, conf, strict=True):
            yield str(path), model.names[int(p)], exit_label(int(e), model.count), float(c)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, sys.stderr.isatty()

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.shown:
            filled = 30 * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (30 - filled)
            print(f"\r[{bar}] {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.shown:
            print("\r" + " " * 50 + "\r", end="", file=sys.stderr, flush=True)


def run_predict(model_path: str | Path, inputs: list[str], batch_size: int = BATCH_SIZE,
                out: str | Path | None = None,
                runtime: str = "torchscript") -> tuple[list[tuple], list[Path]]:  # fmt: skip
    """Classify every image the inputs name; print the lines (or write ``out`` as CSV).

    ``runtime``: ``torchscript`` (a ``.pt`` of export_cascade) or ``onnx`` (a ``.onnx`` of
    export_onnx). Returns the rows and the skipped paths.
    """
    if batch_size < 1:
        raise CalexError(f"--batch-size is {batch_size}; give a positive number of images")
    if runtime not in RUNTIMES:
        raise CalexError(f"runtime '{runtime}' is not one of {', '.join(RUNTIMES)}")
    paths = expand_inputs(inputs)
    model = RUNTIMES[runtime](model_path)
    progress, skipped, rows = Progress(len(paths)), [], []

    def warn(path: Path, reason: str) -> None:
        progress.clear()
        print(f"calex warning: image {path} cannot be read ({reason}); skipped", file=sys.stderr)
        skipped.append(path)
        progress.step()

    for row in classify(model, paths, batch_size, warn):
        rows.append(row)
        progress.step()
        if out is None:
            progress.clear()
            print("\t".join((*row[:3], f"{row[3]:.4f}")), flush=True)
    progress.clear()
    if out is not None:
        with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows((*row[:3], f"{row[3]:.4f}") for row in rows)
        print(f"wrote {len(rows)} predictions to {out}", file=sys.stderr)
    return rows, skipped


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m calex_steps.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="cascade artifact from export_cascade (.onnx of export_onnx with "
                   "--runtime onnx)")  # fmt: skip
    p.add_argument("--runtime", choices=tuple(RUNTIMES), default="torchscript",
                   help="onnx: run a .onnx of export_onnx with ONNX Runtime")  # fmt: skip
    p.add_argument(
        "images",
        nargs="+",
        help="image files, folders (searched recursively) or glob patterns; any size and "
        "mode, resized and centre-cropped to the artifact's input size",
    )
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per forward pass")
    p.add_argument("--out", help="write the predictions to this CSV file instead of stdout")
    return p


def main(argv=None) -> int:
    """Entry point: 0 when every image was classified, 2 when some were skipped, 1 on a
    CalexError (printed as one line)."""
    skipped: list[Path] = []

    def body(args_list) -> None:
        args = build_parser().parse_args(args_list)
        skipped.extend(run_predict(args.model, args.images, args.batch_size, args.out,
                                   args.runtime)[1])  # fmt: skip

    status = run_main(body, argv)
    if status == 0 and skipped:
        print(f"calex warning: {len(skipped)} image(s) skipped", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
