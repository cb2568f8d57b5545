"""A user's own image folders at any resolution (``source: image_folder``, docs/formats.md).

Two layouts:

- ``split_folders``: ``<root>/<split>/<class>/<image>``; the folder of each
  split is configurable (``folders``), every split must hold the same class
  folders, and a missing validation folder is carved from train or test
  (``val_from``, ``val_size``) as for the CIFAR archives;
- ``single_folder``: ``<root>/<class>/<image>``, split once into train / val /
  test by a seeded, stratified draw (``val_size``, ``test_size``).

Every image, whatever its size and mode (grey, grey + alpha, RGBA, palette,
16-bit), becomes RGB uint8: the shorter side is resized to ``resize`` and the
centre ``image_size``×``image_size`` is kept. Without ``image_size`` the images'
own size is kept when they all share one (``own_side``), and a folder of several
sizes asks for it. Decoding runs in DataLoader
workers, batch by batch, so the pixels of a split are never all in memory;
an image that cannot be decoded stops the run with one line naming it.
Torch is imported only when images are decoded (``data`` stays light).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from calex_steps.data.splits import stratified_split
from calex_steps.errors import CalexError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DEFAULT_FOLDERS = {"train": "train", "val": None, "test": "test"}
DECODE_BATCH = 256  # images per decoded batch (and per write into prepared.h5)
log = logging.getLogger("calex")


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (hidden ones skipped)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path, classes: list[str], split: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``folder/<class>/*`` in class order; checks the class folders."""
    found = _class_folders(folder)
    missing = [c for c in classes if c not in found]
    if missing:
        raise CalexError(
            f"class folder '{missing[0]}' is missing from split '{split}' (expected "
            f"{folder / missing[0]}); every split needs the class folders of the train split"
        )
    extra = [c for c in found if c not in classes]
    if extra:
        raise CalexError(
            f"split '{split}' has class folder '{extra[0]}' ({folder / extra[0]}) that the "
            "train split lacks; add it to train or remove it"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        images = _images_in(folder / name)
        if not images:
            raise CalexError(
                f"class folder {folder / name} (split '{split}') holds no images "
                f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder"
            )
        files += images
        labels += [label] * len(images)
    return files, np.asarray(labels, dtype=np.int64)


def folder_layout(settings: dict) -> tuple[str, dict]:
    """The configured layout and split folder names, defaults filled in."""
    layout = settings.get("layout", "split_folders")
    folders = {**DEFAULT_FOLDERS, **(settings.get("folders") or {})}
    return layout, folders


def required_paths(settings: dict) -> list[Path]:
    """Folders that must exist before any job starts (checked at parse time)."""
    root = Path(settings.get("root", ""))
    layout, folders = folder_layout(settings)
    if layout == "single_folder":
        return [root]
    return [root / name for name in folders.values() if name]


class FolderImages:
    """The decoded images of one split, produced batch by batch.

    ``shape`` is ``(N, S, S, 3)``; ``batches()`` yields ``(start, uint8 array
    B×S×S×3)`` in file order, decoded by ``workers`` DataLoader processes
    (0 = in this process).
    """

    def __init__(self, files: list[Path], image_size: int, resize: int, workers: int) -> None:
        self.files = [str(f) for f in files]
        self.image_size, self.resize, self.workers = image_size, resize, workers
        self.shape = (len(files), image_size, image_size, 3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, str]:
        """Image ``i`` decoded, or ``(None, reason)`` when it cannot be read."""
        try:
            return decode_file(self.files[i], self.image_size, self.resize), ""
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
            return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def batches(self, batch_size: int = DECODE_BATCH) -> Iterator[tuple[int, np.ndarray]]:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=list,
        )
        start = 0
        for batch in loader:
            for offset, (image, reason) in enumerate(batch):
                if image is None:
                    raise CalexError(
                        f"image {self.files[start + offset]} cannot be decoded ({reason}); "
                        "replace or delete the file and rerun"
                    )
            yield start, np.stack([image for image, _ in batch])
            start += len(batch)


def decode_file(path: str, image_size: int, resize: int) -> np.ndarray:
    """One image file as RGB uint8 ``image_size``×``image_size``×3.

    The shorter side is resized to ``resize`` (bilinear, antialiased), then the
    centre square is cropped. Truncated files raise (PIL's lazy decoding is forced).
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode.startswith(("I", "F")):  # 16-bit or 32-bit grey: keep the top 8 bits
            wide = np.asarray(im, dtype=np.float64)
            im = Image.fromarray((wide / 256 if wide.max() > 255 else wide).astype(np.uint8))
        rgb = im.convert("RGB")
    w, h = rgb.size
    scale = resize / min(w, h)
    new = (max(image_size, round(w * scale)), max(image_size, round(h * scale)))
    if new != (w, h):
        rgb = rgb.resize(new, Image.BILINEAR, reducing_gap=None)
    left, top = (new[0] - image_size) // 2, (new[1] - image_size) // 2
    rgb = rgb.crop((left, top, left + image_size, top + image_size))
    return np.asarray(rgb, dtype=np.uint8)


Part = tuple[list[Path], np.ndarray, np.ndarray]  # files, labels, index in the listing


def _listing(files: list[Path], labels: np.ndarray) -> Part:
    """A whole folder listing: every file at its own position."""
    return files, labels, np.arange(len(labels), dtype=np.int64)


def _carve(part: Part, n_second: int, seed: int) -> tuple[Part, Part]:
    """A seeded, stratified split of ``part`` into the rest and ``n_second`` samples."""
    files, labels, index = part
    keep, second = stratified_split(labels, n_second, seed)
    return tuple(([files[i] for i in rows], labels[rows], index[rows]) for rows in (keep, second))


def _split_files(settings: dict) -> tuple[dict, list[str], str]:
    """``{split: (files, labels)}`` for train/val/test, the class names, and the val source."""
    root = Path(settings["root"])
    layout, folders = folder_layout(settings)
    seed = int(settings.get("split_seed", 0))
    if layout == "single_folder":
        classes = _class_folders(root)
        if not classes:
            raise CalexError(f"{root} holds no class folders; expected {root}/<class>/<image>")
        everything = _listing(*_scan(root, classes, "all"))
        for key in ("val_size", "test_size"):
            if key not in settings:
                raise CalexError(f"datasets.<key>.{key} is required with layout: single_folder")
        rest, test = _carve(everything, int(settings["test_size"]), seed)
        train, val = _carve(rest, int(settings["val_size"]), seed + 1)
        return {"train": train, "val": val, "test": test}, classes, "single_folder"
    classes = _class_folders(root / folders["train"])
    if not classes:
        raise CalexError(f"{root / folders['train']} holds no class folders (<class>/<image>)")
    parts = {
        split: _listing(*_scan(root / name, classes, split))
        for split, name in folders.items()
        if name
    }
    if "val" in parts:
        return parts, classes, "val_folder"
    val_from = settings.get("val_from", "train")
    if val_from not in ("train", "test") or "val_size" not in settings:
        raise CalexError(
            "without a val folder (folders.val), set datasets.<key>.val_from (train or test) "
            "and val_size to carve the validation split"
        )
    rest, val = _carve(parts[val_from], int(settings["val_size"]), seed)
    parts[val_from], parts["val"] = rest, val
    return parts, classes, val_from


def own_side(files: list[Path], root: str) -> int:
    """The side an image folder is stored at when ``image_size`` is not set: that of its
    images when they all have one size (the shorter side when they are not square).

    Only the files' headers are read. Images of several sizes stop the run with one line
    listing the sizes found: a side would then have to be chosen, which the user does.
    """
    from PIL import Image

    sizes: Counter = Counter()
    for path in files:
        try:
            with Image.open(path) as im:
                sizes[im.size] += 1
        except Exception:  # an unreadable file is named when it is decoded
            continue
    if len(sizes) == 1:
        (width, height), count = sizes.most_common(1)[0]
        log.info("image_size not set: all %d images are %d×%d", count, width, height)
        return min(width, height)
    if not sizes:
        raise CalexError(f"no image under {root} can be read; check datasets.<key>.root")
    shown = ", ".join(f"{w}×{h} ({n} images)" for (w, h), n in sizes.most_common(5))
    more = f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""
    raise CalexError(
        f"the images under {root} have {len(sizes)} sizes: {shown}{more}; set "
        "datasets.<key>.image_size to the side they should be resized and centre-cropped to"
    )


def read_image_folder(settings: dict, workers: int = 0) -> tuple[dict, list[str], str]:
    """The three splits of an image-folder dataset, their images decoded lazily.

    Returns ``({split: {"images": FolderImages, "labels", "fine_labels", "index"}},
    class_names, val_source)``; ``index`` is each file's position in the listing
    of the folder it came from (class order, then file name).
    """
    parts, classes, val_source = _split_files(settings)
    size = settings.get("image_size")
    if size is None:
        size = own_side([f for split in parts.values() for f in split[0]], settings["root"])
    size = int(size)
    resize = int(settings.get("resize") or size)
    if resize < size:
        raise CalexError(
            f"datasets.<key>.resize ({resize}) is smaller than image_size ({size}); "
            "the centre crop needs resize >= image_size"
        )
    splits = {}
    for split in ("train", "val", "test"):
        files, labels, index = parts[split]
        splits[split] = {
            "images": FolderImages(files, size, resize, workers),
            "labels": labels,
            "fine_labels": labels.copy(),
            "index": index,
        }
    return splits, classes, val_source
