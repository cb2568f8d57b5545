"""Dataset sources turned into one uniform prepared file (SPEC section 2).

Every source (the generated synthetic set, the CIFAR-100 and CIFAR-10 python
archives, CINIC-10 image folders) becomes three splits of uint8 images
N×32×32×3 (RGB, HWC) with task labels, fine labels and the index of each
sample in its original source split. This module must stay importable without
torch: ``check_source`` runs while the Snakefile is parsed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from calex_steps import __version__
from calex_steps.io import CalexError, atomic_path

SOURCES = ("synthetic", "cifar100_coarse", "cifar10", "cinic10")
SPLITS = ("train", "val", "test")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CINIC_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
SYNTHETIC_DEFAULTS = {
    "n_train": 4000,
    "n_val": 2000,
    "n_test": 2000,
    "num_coarse": 8,
    "fine_per_coarse": 3,
    "seed": 0,
}

# ----------------------------------------------------------------------------
# Synthetic hierarchical set
# ----------------------------------------------------------------------------
# Each coarse class owns a palette (background colour, shape colour, and a
# sinusoidal grating with its own orientation and frequency): a local cue that
# even a bag of early features can read. Each fine class owns a global layout
# (three identical blobs in distinct cells of a 4×4 grid), unique over all fine
# classes, so the layout alone also identifies the coarse class, but only a
# network that relates distant positions can read it. A per-sample difficulty
# d in [0, 1] blends the palette towards another coarse class (at d = 1 the
# colour cue points the wrong way), lowers the shapes' contrast, adds noise and
# widens the random translation of the layout.

_SIZE = 32
_GRID = 4  # layout cells per side (8 px each)
_BLOBS = 3  # blobs per layout
_BLOB_SIGMA = 2.4  # px
_BLEND_MAX = 0.8  # palette blend towards another class at d = 1
_SHIFT_MAX = 5  # extra layout translation (px) at d = 1
_CONTRAST_DROP = 0.4  # blob contrast lost at d = 1
_TEXTURE_AMP = 0.2  # grating amplitude relative to the background colour
_NOISE_MIN, _NOISE_GAIN = 0.03, 0.16  # pixel noise std (in [0, 1] units) = min + gain * d
_DIFFICULTY_BETA = (1.2, 1.2)


def _layouts(rng: np.random.Generator, n_fine: int) -> np.ndarray:
    """Draw ``n_fine`` distinct blob layouts as cell indices, shape (n_fine, _BLOBS).

    A layout is rejected if it or its horizontal mirror equals one already
    drawn, so horizontal-flip augmentation never merges two classes.
    """
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < n_fine:
        cells = tuple(sorted(rng.choice(_GRID * _GRID, size=_BLOBS, replace=False).tolist()))
        mirror = tuple(
            sorted(r * _GRID + (_GRID - 1 - c) for r, c in (divmod(x, _GRID) for x in cells))
        )
        if cells in seen or mirror in seen:
            continue
        seen.update({cells, mirror})
        out.append(cells)
    return np.array(out, dtype=np.int64)


def _templates(seed_seq: np.random.SeedSequence, num_coarse: int, n_fine: int) -> dict:
    """Class templates: per-coarse palettes and per-fine layouts."""
    rng = np.random.default_rng(seed_seq)
    bg = rng.uniform(0.15, 0.85, size=(num_coarse, 3))
    return {
        "bg": bg.astype(np.float32),
        # shapes contrast with their background: the colour opposite in RGB, pushed apart
        "fg": np.clip(1 - bg + rng.uniform(-0.15, 0.15, size=bg.shape), 0.05, 0.95).astype(
            np.float32
        ),
        # grating orientations spread over [0, pi) with a random offset per class
        "theta": (np.arange(num_coarse) + rng.uniform(0, 0.5, num_coarse)) * np.pi / num_coarse,
        "omega": rng.uniform(0.5, 1.4, size=num_coarse),  # rad per px
        "layouts": _layouts(rng, n_fine),
    }


def _render(tpl: dict, fine: np.ndarray, coarse: np.ndarray, rng: np.random.Generator):
    """Render one split; returns (uint8 images N×32×32×3, float32 difficulty N)."""
    n, num_coarse = len(fine), len(tpl["bg"])
    d = rng.beta(*_DIFFICULTY_BETA, size=n).astype(np.float32)
    other = (coarse + rng.integers(1, num_coarse, size=n)) % num_coarse
    alpha = (_BLEND_MAX * d)[:, None]  # N×1
    bg = (1 - alpha) * tpl["bg"][coarse] + alpha * tpl["bg"][other]  # N×3
    fg = (1 - alpha) * tpl["fg"][coarse] + alpha * tpl["fg"][other]  # N×3
    pos = np.arange(_SIZE, dtype=np.float32)  # 32

    def grating(k: np.ndarray, phase: np.ndarray) -> np.ndarray:  # N×32×32
        th, om = tpl["theta"][k], tpl["omega"][k]  # N
        gx = (om * np.cos(th))[:, None, None] * pos[None, None, :]
        gy = (om * np.sin(th))[:, None, None] * pos[None, :, None]
        return np.sin(gx + gy + phase[:, None, None]).astype(np.float32)

    phase = rng.uniform(0, 2 * np.pi, size=n)
    a3 = alpha[:, :, None]
    texture = (1 - a3) * grating(coarse, phase) + a3 * grating(other, phase)  # N×32×32
    # blob centres: cell centres plus a per-sample shift that grows with difficulty
    cells = tpl["layouts"][fine]  # N×B
    half = _SIZE / (2 * _GRID)
    reach = np.rint(1 + _SHIFT_MAX * d)[:, None]  # N×1, px
    cy = (cells // _GRID) * 2 * half + half + rng.uniform(-1, 1, size=(n, 1)) * reach
    cx = (cells % _GRID) * 2 * half + half + rng.uniform(-1, 1, size=(n, 1)) * reach
    mask = np.zeros((n, _SIZE, _SIZE), dtype=np.float32)
    for b in range(cells.shape[1]):  # separable Gaussians, flattened on top into discs
        gy = np.exp(-((pos[None] - cy[:, b : b + 1]) ** 2) / (2 * _BLOB_SIGMA**2))  # N×32
        gx = np.exp(-((pos[None] - cx[:, b : b + 1]) ** 2) / (2 * _BLOB_SIGMA**2))  # N×32
        np.maximum(mask, gy[:, :, None] * gx[:, None, :], out=mask)
    mask = np.minimum(1.0, 1.8 * mask) * (1 - _CONTRAST_DROP * d)[:, None, None]
    base = bg[:, None, None, :] * (1 + _TEXTURE_AMP * texture[..., None])  # N×32×32×3
    img = base * (1 - mask[..., None]) + fg[:, None, None, :] * mask[..., None]
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    img += noise * (_NOISE_MIN + _NOISE_GAIN * d)[:, None, None, None]
    images = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return images, d


def make_synthetic(
    n_train: int, n_val: int, n_test: int, num_coarse: int, fine_per_coarse: int, seed: int
) -> tuple[dict[str, dict[str, np.ndarray]], list[str], list[str]]:
    """Generate the hierarchical synthetic set.

    Returns ``(splits, class_names, fine_class_names)``; ``splits[split]`` has
    ``images`` uint8 N×32×32×3, ``labels`` (coarse) int64, ``fine_labels``
    int64 (fine class ``c * fine_per_coarse + j`` belongs to coarse class
    ``c``), ``index`` int64 and ``difficulty`` float32 in [0, 1]. Each split
    has its own random stream, so changing one split's size leaves the others
    unchanged; the same arguments always give byte-identical arrays.
    """
    if num_coarse < 2 or fine_per_coarse < 1:
        raise CalexError("synthetic settings need num_coarse >= 2 and fine_per_coarse >= 1")
    n_fine = num_coarse * fine_per_coarse
    if n_fine > 200:
        raise CalexError(
            "synthetic settings allow at most 200 fine classes (num_coarse * fine_per_coarse)"
        )
    tpl_seq, *split_seqs = np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
    tpl = _templates(tpl_seq, num_coarse, n_fine)
    splits = {}
    for split, n, seq in zip(SPLITS, (n_train, n_val, n_test), split_seqs, strict=True):
        if n < 1:
            raise CalexError(f"synthetic setting n_{split} must be >= 1 (got {n})")
        rng = np.random.default_rng(seq)
        fine = rng.permutation(np.arange(n) % n_fine).astype(np.int64)  # balanced
        coarse = fine // fine_per_coarse
        images, difficulty = _render(tpl, fine, coarse, rng)
        splits[split] = {
            "images": images,
            "labels": coarse,
            "fine_labels": fine,
            "index": np.arange(n, dtype=np.int64),
            "difficulty": difficulty,
        }
    names = [f"coarse{c:02d}" for c in range(num_coarse)]
    fine_names = [
        f"coarse{c:02d}_fine{j}" for c in range(num_coarse) for j in range(fine_per_coarse)
    ]
    return splits, names, fine_names


# ----------------------------------------------------------------------------
# Readers of the official on-disk formats
# ----------------------------------------------------------------------------


def _load_pickle(path: Path, keys: tuple[str, ...]) -> dict[str, object]:
    """Load one CIFAR pickle and check it has ``keys`` (stored as bytes or str)."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
    except FileNotFoundError as exc:
        raise CalexError(f"dataset file {path} is missing") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise CalexError(f"dataset file {path} is not a CIFAR python pickle ({exc})") from exc
    if not isinstance(raw, dict):
        raise CalexError(f"dataset file {path} is not a CIFAR python pickle (no dict inside)")
    out = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = [k for k in keys if k not in out]
    if missing:
        raise CalexError(f"dataset file {path} lacks the entries {missing}; re-extract the archive")
    return out


def _names(values) -> list[str]:
    """Class names from a pickle, decoding bytes."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _chw_rows_to_hwc(data, path: Path) -> np.ndarray:
    """CIFAR rows N×3072 (1024 R, then G, then B, each row-major) -> uint8 N×32×32×3."""
    rows = np.asarray(data, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3 * _SIZE * _SIZE:
        raise CalexError(f"dataset file {path}: 'data' has shape {rows.shape}, expected N×3072")
    return np.ascontiguousarray(rows.reshape(-1, 3, _SIZE, _SIZE).transpose(0, 2, 3, 1))


def _official(images: np.ndarray, labels, fine_labels=None) -> dict[str, np.ndarray]:
    """One official split as arrays; ``index`` is the position in that split."""
    labels = np.asarray(labels, dtype=np.int64)
    fine = labels if fine_labels is None else np.asarray(fine_labels, dtype=np.int64)
    if not len(images) == len(labels) == len(fine):
        raise CalexError("dataset files are inconsistent: images and labels differ in length")
    return {
        "images": images,
        "labels": labels,
        "fine_labels": fine,
        "index": np.arange(len(labels), dtype=np.int64),
    }


def read_cifar100_python(root: str | Path) -> dict:
    """Read ``root/{train,test,meta}`` of the official ``cifar-100-python`` archive.

    Returns ``{"train": split, "test": split, "class_names": [...20],
    "fine_class_names": [...100]}``; each split holds ``images`` uint8
    N×32×32×3, ``labels`` (the archive's ``coarse_labels``), ``fine_labels``
    and ``index``, all in the archive's order.
    """
    root = Path(root)
    out: dict = {}
    for split in ("train", "test"):
        raw = _load_pickle(root / split, ("data", "fine_labels", "coarse_labels"))
        images = _chw_rows_to_hwc(raw["data"], root / split)
        out[split] = _official(images, raw["coarse_labels"], raw["fine_labels"])
    meta = _load_pickle(root / "meta", ("fine_label_names", "coarse_label_names"))
    out["class_names"] = _names(meta["coarse_label_names"])
    out["fine_class_names"] = _names(meta["fine_label_names"])
    return out


def read_cifar10_python(root: str | Path) -> dict:
    """Read ``root/{data_batch_1..5,test_batch,batches.meta}`` of ``cifar-10-batches-py``.

    Returns ``{"train": split, "test": split, "class_names": [...10],
    "fine_class_names": same}``; ``fine_labels`` equal ``labels``.
    """
    root = Path(root)
    parts = [_load_pickle(root / name, ("data", "labels")) for name in CIFAR10_BATCHES]
    images = np.concatenate([_chw_rows_to_hwc(p["data"], root) for p in parts])
    out: dict = {"train": _official(images, np.concatenate([p["labels"] for p in parts]))}
    test = _load_pickle(root / "test_batch", ("data", "labels"))
    out["test"] = _official(_chw_rows_to_hwc(test["data"], root / "test_batch"), test["labels"])
    names = _names(_load_pickle(root / "batches.meta", ("label_names",))["label_names"])
    out["class_names"] = out["fine_class_names"] = names
    return out


def _read_folder(folder: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """Read ``folder/<class>/*.png`` in class order, files sorted by name."""
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.png")):
            with Image.open(file) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if arr.shape != (_SIZE, _SIZE, 3):
                raise CalexError(f"image {file} is {arr.shape[1]}×{arr.shape[0]}, expected 32×32")
            images.append(arr)
            labels.append(label)
    if not images:
        raise CalexError(f"no PNG images under {folder}/<class>/")
    return _official(np.stack(images), labels)


def read_cinic10(root: str | Path) -> dict:
    """Read CINIC-10 image folders ``root/{train,valid,test}/<class>/*.png``.

    Class order is the sorted folder names of ``root/train`` (every split
    must have the same folders). Returns ``{"train", "valid", "test"}`` splits
    plus ``class_names`` and ``fine_class_names`` (equal).
    """
    root = Path(root)
    for split in ("train", "valid", "test"):
        if not (root / split).is_dir():
            raise CalexError(f"CINIC-10 folder {root / split} is missing")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    out: dict = {"class_names": classes, "fine_class_names": classes}
    for split in ("train", "valid", "test"):
        found = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        if found != classes:
            raise CalexError(
                f"{root / split} has class folders {found}, expected {classes} as in train/"
            )
        out[split] = _read_folder(root / split, classes)
    return out


# ----------------------------------------------------------------------------
# Splitting, source checks, dispatch
# ----------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into two sorted, disjoint, covering index arrays.

    The second part has ``n_second`` samples; each class gets its proportional
    share rounded by largest remainder (so within one sample of exact), and the
    members of each class are a seeded random choice.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_second < n:
        raise CalexError(f"val_size must be between 1 and {n - 1} (got {n_second})")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_second / n)
    take = np.floor(quota).astype(np.int64)
    # give the leftover samples to the classes with the largest fractional parts
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n_second - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    second = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    mask = np.zeros(n, dtype=bool)
    mask[np.concatenate(second)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _required_files(source: str, root: Path) -> list[Path]:
    """Paths that must exist for a real source."""
    if source == "cifar100_coarse":
        return [root / name for name in ("train", "test", "meta")]
    if source == "cifar10":
        return [root / name for name in (*CIFAR10_BATCHES, "test_batch", "batches.meta")]
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
    missing = [p for p in _required_files(source, root) if not p.exists()]
    if not missing:
        return None
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


def _subset(split: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``idx`` of every array of a split."""
    return {k: v[idx] for k, v in split.items()}


def _three_splits(raw: dict, settings: dict, source: str) -> tuple[dict, str]:
    """Official splits -> train/val/test following ``val_from``; returns (splits, val_source)."""
    default = "valid" if source == "cinic10" else "train"
    val_from = settings.get("val_from", default)
    allowed = ("valid", "train", "test") if source == "cinic10" else ("train", "test")
    if val_from not in allowed:
        raise CalexError(
            f"datasets.<key>.val_from is {val_from!r}; use one of {', '.join(allowed)}"
        )
    if val_from == "valid":
        return {"train": raw["train"], "val": raw["valid"], "test": raw["test"]}, "valid"
    if "val_size" not in settings:
        raise CalexError(f"datasets.<key>.val_size is required with val_from: {val_from}")
    seed = int(settings.get("split_seed", 0))
    part = raw[val_from]
    # stratify by fine label: for CIFAR-100 this also balances the coarse classes
    keep, val = stratified_split(part["fine_labels"], int(settings["val_size"]), seed)
    splits = {"train": raw["train"], "test": raw["test"]}
    splits[val_from] = _subset(part, keep)
    splits["val"] = _subset(part, val)
    return {k: splits[k] for k in SPLITS}, val_from


def prepare(settings: dict) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Build the train/val/test splits of one configured dataset.

    ``settings`` is the ``datasets.<key>`` subtree (``source`` plus, for the
    synthetic set, ``n_train``, ``n_val``, ``n_test``, ``num_coarse``,
    ``fine_per_coarse``, ``seed``). Returns ``(splits, attrs)``; ``attrs``
    holds every root attribute of ``prepared.h5`` except ``dataset``.
    """
    message = check_source(settings)
    if message is not None:
        raise CalexError(message)
    source = settings["source"]
    if source == "synthetic":
        kw = {k: int(settings.get(k, v)) for k, v in SYNTHETIC_DEFAULTS.items()}
        splits, names, fine_names = make_synthetic(**kw)
        val_source, split_seed = "generated", kw["seed"]
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
        splits, val_source = _three_splits(raw, settings, source)
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


# ----------------------------------------------------------------------------
# prepared.h5
# ----------------------------------------------------------------------------
_JSON_ATTRS = ("class_names", "fine_class_names", "settings")


def write_prepared(path: str | Path, splits: dict[str, dict[str, np.ndarray]], attrs: dict) -> None:
    """Write ``prepared.h5`` (docs/formats.md) atomically; lists and dicts become JSON."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if key in _JSON_ATTRS else value
        f.attrs["calex_version"] = __version__
        for split in SPLITS:
            group = f.create_group(split)
            for name, arr in splits[split].items():
                group.create_dataset(name, data=arr)


def read_prepared(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """All arrays of one split of ``prepared.h5`` (images, labels, fine_labels, index, ...)."""
    import h5py

    if not Path(path).exists():
        raise CalexError(f"prepared file {path} is missing; run the prepare_dataset rule first")
    with h5py.File(path, "r") as f:
        if split not in f:
            raise CalexError(f"prepared file {path} has no split {split!r}; expected {SPLITS}")
        return {name: ds[()] for name, ds in f[split].items()}


def read_prepared_attrs(path: str | Path) -> dict:
    """Root attributes of ``prepared.h5`` with the JSON ones decoded."""
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    for key in _JSON_ATTRS:
        attrs[key] = json.loads(attrs[key])
    return attrs
