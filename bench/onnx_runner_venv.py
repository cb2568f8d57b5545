"""The ONNX runner in a new virtualenv that holds numpy, onnxruntime and Pillow only.

    .venv/bin/python bench/onnx_runner_venv.py --results results/synthetic/r18tiny \
        --prepared results/synthetic/prepared.h5 --margin 0.2 [--venv /tmp/runner-venv]

After ``make demo`` and ``snakemake onnx_exports`` (docs/deploy.md). The script

1. creates a virtualenv with ``python3 -m venv`` (no system site-packages) and installs
   numpy, Pillow and the onnxruntime version this project pins, nothing else, and checks
   that ``import torch`` fails inside it;
2. writes the test images of ``--prepared`` as PNG files (``--limit`` of them);
3. for every run under ``--results`` that has both ``cascade_m<margin>.onnx`` and
   ``cascade_m<margin>.pt``: runs a copy of ``calex_steps/deploy/onnx_runner.py`` (the
   one file, alone in a folder) with the new virtualenv's Python on the ONNX cascade,
   and ``python -m calex_steps.predict`` on the TorchScript cascade, on the same files,
   and compares the predicted class and the exit of every image.

Prints one line per run (images, equal classes, equal exits, largest confidence
difference) and exits 1 when any class or exit differs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from calex_steps.data.prepared import read_arrays
from calex_steps.deploy import onnx_runner

PACKAGES = ("numpy", "Pillow", f"onnxruntime=={importlib.metadata.version('onnxruntime')}")


def make_venv(folder: Path) -> Path:
    """A new virtualenv at ``folder`` with PACKAGES only; its Python."""
    subprocess.run(["python3", "-m", "venv", "--clear", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        raise SystemExit(f"torch is importable in {folder}: not a clean virtualenv")
    return python


def write_images(prepared: Path, folder: Path, limit: int) -> list[str]:
    """The first ``limit`` test images as PNG files, in test-split order."""
    images = read_arrays(prepared, "test", ("images",), limit)[0]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"test{i:05d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def parse(lines: str) -> list[tuple[str, str, str, float]]:
    """(path, class, exit, confidence) of each output line."""
    rows = [line.split("\t") for line in lines.splitlines() if line.strip()]
    return [(p, c, e, float(x)) for p, c, e, x in rows]


def compare(python: Path, runner_dir: Path, onnx_model: Path, script: Path,
            paths: list[str]) -> tuple[int, int, int, float]:  # fmt: skip
    """(images, equal classes, equal exits, largest |confidence difference|)."""
    alone = runner_dir / "cascade.onnx"
    shutil.copy(onnx_model, alone)
    ours = subprocess.run([str(python), "onnx_runner.py", "--model", alone.name, *paths],
                          cwd=runner_dir, capture_output=True, text=True, check=True)  # fmt: skip
    theirs = subprocess.run([sys.executable, "-m", "calex_steps.predict", "--model",
                             str(script), *paths], capture_output=True, text=True,
                            check=True)  # fmt: skip
    a, b = parse(ours.stdout), parse(theirs.stdout)
    if [r[0] for r in a] != [r[0] for r in b]:
        raise SystemExit(f"{onnx_model}: the two runs classified different files")
    classes = sum(x[1] == y[1] for x, y in zip(a, b, strict=True))
    exits = sum(x[2] == y[2] for x, y in zip(a, b, strict=True))
    gap = max(abs(x[3] - y[3]) for x, y in zip(a, b, strict=True))
    return len(a), classes, exits, gap


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, required=True, help="results/<dataset>/<backbone>")
    p.add_argument("--prepared", type=Path, required=True, help="results/<dataset>/prepared.h5")
    p.add_argument("--margin", default="0.2", help="the exported margin (deploy.margin)")
    p.add_argument("--venv", type=Path, help="where to create the virtualenv (default: temp)")
    p.add_argument("--limit", type=int, default=2000, help="test images to classify")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        python = make_venv(args.venv or tmp / "venv")
        print(f"virtualenv: {' '.join(PACKAGES)}; import torch fails in it")
        (tmp / "images").mkdir()
        paths = write_images(args.prepared, tmp / "images", args.limit)
        runner_dir = tmp / "runner"
        runner_dir.mkdir()
        shutil.copy(onnx_runner.__file__, runner_dir / "onnx_runner.py")
        differ = 0
        for model in sorted(args.results.glob(f"*/seed*/cascade_m{args.margin}.onnx")):
            script = model.with_suffix(".pt")
            if not script.exists():
                continue
            n, classes, exits, gap = compare(python, runner_dir, model, script, paths)
            differ += (n - classes) + (n - exits)
            run = model.parent.relative_to(args.results)
            print(f"{run}: {n} images, classes equal {classes}, exits equal {exits}, "
                  f"largest confidence difference {gap:.4f}")  # fmt: skip
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
