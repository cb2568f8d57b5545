"""Dataset sources: which exist, whether their files are there, preparing one (docs/method.md#data).

``check_source`` runs while the Snakefile is parsed, so this module and what
it imports at the top stay free of torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calex_steps.data.archives import (
    CIFAR10_BATCHES,
    read_cifar10_python,
    read_cifar100_python,
    read_cinic10,
)
from calex_steps.data.image_folder import read_image_folder, required_paths
from calex_steps.data.splits import three_splits
from calex_steps.data.synthetic import SYNTHETIC_DEFAULTS, make_synthetic
from calex_steps.errors import CalexError

SOURCES = ("synthetic", "cifar100_coarse", "cifar10", "cinic10", "image_folder")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CINIC_URL = "https://datashare.ed.ac.uk/handle/10283/3192"


def _required_files(source: str, root: Path, settings: dict | None = None) -> list[Path]:
    """Paths that must exist for a real source."""
    if source == "cifar100_coarse":
        return [root / name for name in ("train", "test", "meta")]
    if source == "cifar10":
        return [root / name for name in (*CIFAR10_BATCHES, "test_batch", "batches.meta")]
    if source == "image_folder":
        return required_paths(settings)
    return [root / name for name in ("train", "valid", "test")]


def check_source(settings: dict) -> str | None:
    """None when the configured source can be read (or downloaded), else a one-line fix.

    Runs while the Snakefile is parsed, so it only looks at the file system.
    """
    source = settings.get("source")
    if source not in SOURCES:
        return f"datasets.<key>.source is {source!r}; use one of {', '.join(SOURCES)}"
    if source == "synthetic":
        return None
    root = Path(settings.get("root", ""))
    missing = [p for p in _required_files(source, root, settings) if not p.exists()]
    if not missing:
        return None
    if source == "image_folder":
        return (
            f"image folder {missing[0]} does not exist; put the images at "
            "<root>/<split>/<class>/<image> (or <root>/<class>/<image> with layout: "
            "single_folder), or fix datasets.<key>.root / folders"
        )
    if source == "cinic10":
        return (
            f"CINIC-10 not found: expected the folder {missing[0]} (with train/, valid/, test/ "
            f"each holding <class>/*.png). Download CINIC-10.tar.gz from {CINIC_URL} and extract "
            f"it into {root}, or set datasets.<key>.root to where it is (download: true only "
            "works for the CIFAR archives)."
        )
    if settings.get("download", False):
        return None
    archive = "cifar-100-python.tar.gz" if source == "cifar100_coarse" else "cifar-10-python.tar.gz"
    return (
        f"{source} not found: expected the file {missing[0]}. Download {archive} from {CIFAR_URL} "
        f"and extract it so that {missing[0]} exists, or set datasets.<key>.download: true "
        f"(the folder must then be named {_required_root_name(source)})."
    )


def _required_root_name(source: str) -> str:
    """Folder name torchvision's downloader extracts the archive into."""
    return "cifar-100-python" if source == "cifar100_coarse" else "cifar-10-batches-py"


def _download(source: str, root: Path) -> None:
    """Fetch an official CIFAR archive with torchvision into ``root``'s parent."""
    if root.name != _required_root_name(source):
        raise CalexError(
            f"download: true extracts into a folder named {_required_root_name(source)}; "
            f"set datasets.<key>.root to .../{_required_root_name(source)} (got {root})"
        )
    import torchvision

    cls = (
        torchvision.datasets.CIFAR100
        if source == "cifar100_coarse"
        else torchvision.datasets.CIFAR10
    )
    try:
        cls(str(root.parent), train=True, download=True)
    except OSError as exc:
        raise CalexError(
            f"downloading {source} into {root.parent} failed ({exc}); {CIFAR_URL}"
        ) from exc


def prepare(settings: dict, workers: int = 0) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Build the train/val/test splits of one configured dataset.

    ``settings`` is the ``datasets.<key>`` subtree (``source`` plus, for the
    synthetic set, ``n_train``, ``n_val``, ``n_test``, ``num_coarse``,
    ``fine_per_coarse``, ``seed``). Returns ``(splits, attrs)``; ``attrs``
    holds every root attribute of ``prepared.h5`` except ``dataset``. For
    ``image_folder`` the ``images`` of each split are decoded lazily
    (``data.image_folder.FolderImages``) by ``workers`` DataLoader workers.
    """
    message = check_source(settings)
    if message is not None:
        raise CalexError(message)
    source = settings["source"]
    if source == "synthetic":
        kw = {k: int(settings.get(k, v)) for k, v in SYNTHETIC_DEFAULTS.items()}
        splits, names, fine_names = make_synthetic(**kw)
        val_source, split_seed = "generated", kw["seed"]
    elif source == "image_folder":
        splits, names, val_source = read_image_folder(settings, workers)
        fine_names = names
        split_seed = int(settings.get("split_seed", 0))
    else:
        root = Path(settings["root"])
        if source != "cinic10" and settings.get("download", False):
            if not all(p.exists() for p in _required_files(source, root)):
                _download(source, root)
        reader = {
            "cifar100_coarse": read_cifar100_python,
            "cifar10": read_cifar10_python,
            "cinic10": read_cinic10,
        }[source]
        raw = reader(root)
        names, fine_names = raw["class_names"], raw["fine_class_names"]
        splits, val_source = three_splits(raw, settings, source)
        split_seed = int(settings.get("split_seed", 0))
    attrs = {
        "source": source,
        "num_classes": len(names),
        "num_fine_classes": len(fine_names),
        "class_names": names,
        "fine_class_names": fine_names,
        "val_source": val_source,
        "split_seed": split_seed,
        "settings": settings,
    }
    return splits, attrs
