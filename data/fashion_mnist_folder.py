"""Write Fashion-MNIST as an image folder: OUT/{train,test}/<class>/<n>.png (28×28 grey PNGs).

    python data/fashion_mnist_folder.py data/fashion-mnist-folder --npz PATH/fashion_mnist.npz \
        [--train-per-class 600] [--test-per-class 200]

The first N images of each class, in the official order, are written as they
are (grey, 28×28): promoting them to RGB and upscaling is prepare_dataset's job
(``image_size`` in the config). The npz holds the official arrays
(``{train,test}_images`` uint8 N×28×28, ``{train,test}_labels``, ``classes``); its
path is always given (``--npz``), never guessed. Needs numpy and Pillow only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_split(out: Path, images: np.ndarray, labels: np.ndarray, classes, per_class: int) -> int:
    """The first ``per_class`` images of each class as ``out/<class>/<n>.png``; the count."""
    written = 0
    for label, name in enumerate(classes):
        folder = out / str(name).replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for n in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[n]).save(folder / f"{n:05d}.png")
            written += 1
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--npz", type=Path, required=True, help="the Fashion-MNIST arrays (.npz)")
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=200)
    a = p.parse_args(argv)
    if not a.npz.is_file():
        raise SystemExit(
            f"error: --npz {a.npz} does not exist; pass the path of an npz holding "
            "train_images, train_labels, test_images, test_labels and classes"
        )
    d = np.load(a.npz)
    classes = [str(c) for c in d["classes"]]
    for split, per_class in (("train", a.train_per_class), ("test", a.test_per_class)):
        count = write_split(a.out / split, d[f"{split}_images"], d[f"{split}_labels"], classes,
                            per_class)  # fmt: skip
        print(f"{split}: {count} images under {a.out / split}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
