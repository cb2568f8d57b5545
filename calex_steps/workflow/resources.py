"""What each job asks the scheduler for, and what a study needs: memory, run time, disk.

The rules call these for their ``resources:``; the resource table of docs/running.md
(``python -m calex_steps.workflow.resource_table --markdown``, built in
``resource_table.py``) comes from the same functions. Pure arithmetic on the
validated config: no torch, no file is opened.

Memory follows chunked reading: a head job holds one batch of cached features
(in the stored dtype, as float32 and as a tensor) plus the per-sample arrays
(logits, labels, weights, outputs) of the attach points it trains, never a
whole split of features. Run times are estimates for one recent data-centre
GPU (A10G class) and a cache read at ``READ_MB_S``; they are not measured here.
"""

from __future__ import annotations

from calex_steps.data.cache_format import cache_bytes
from calex_steps.data.feature_cache import HEAD_FORMS
from calex_steps.data.synthetic import SYNTHETIC_DEFAULTS
from calex_steps.workflow.exits import cache_layout, recipe_exits

MB = 2**20
BASE_MB = 2000  # interpreter, numpy, torch and its CUDA host state
IMAGE_SIDE = 32
# Official split sizes (train, val, test) of the real sources with their default carving.
SPLIT_SIZES = {
    "cifar100_coarse": (40_000, 10_000, 10_000),
    "cifar10": (45_000, 5_000, 10_000),
    "cinic10": (90_000, 90_000, 90_000),
}
OFFICIAL = {"cifar100_coarse": (50_000, 10_000), "cifar10": (50_000, 10_000)}
CLASSES = {"cifar100_coarse": (20, 100), "cifar10": (10, 10), "cinic10": (10, 10)}
# Stage shapes at 32×32 input: channels at width 1 and side, per architecture family.
BASIC = {"layer1": (64, 32), "layer2": (128, 16), "layer3": (256, 8), "layer4": (512, 4)}
BOTTLENECK = {k: (4 * c, s) for k, (c, s) in BASIC.items()}
HE_CIFAR = {"layer1": (16, 32), "layer2": (32, 16), "layer3": (64, 8)}
FAMILY = {"resnet18": BASIC, "resnet34": BASIC, "resnet50": BOTTLENECK, "resnet101": BOTTLENECK}
# Parameters (millions, width 1); training activations kept per image (millions of floats,
# width 1, 32×32: about six tensors of each block's output size); minutes per pretraining
# epoch on 50k images, one A10G. Unknown architectures get the ResNet50 numbers.
PARAMS_M = {"resnet18": 11.2, "resnet34": 21.3, "resnet50": 23.5, "resnet101": 42.5,
            "resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
            "resnet110": 1.7}  # fmt: skip
ACTIVATIONS_M = {"resnet18": 1.6, "resnet34": 2.9, "resnet50": 8.2, "resnet101": 12.0,
                 "resnet20": 0.55, "resnet32": 0.9, "resnet44": 1.2, "resnet56": 1.55,
                 "resnet110": 3.0}  # fmt: skip
GPU_MIN_PER_EPOCH = {"resnet18": 0.4, "resnet34": 0.7, "resnet50": 1.2, "resnet101": 2.0,
                     "resnet20": 0.1, "resnet32": 0.15, "resnet44": 0.2, "resnet56": 0.25,
                     "resnet110": 0.5}  # fmt: skip
FORWARD_SHARE = 1 / 3  # an inference pass costs about a third of a training step
READ_MB_S = 1500  # chunked HDF5 read of the cache from a local NVMe disk
LOGIT_ARRAYS = 4  # per attach point and sample: backbone logits, target, branch logits, confs
PIXELS = IMAGE_SIDE * IMAGE_SIDE * 3
# Rules whose memory does not depend on the configuration.
FIXED_MEM_MB = {"pretrain_backbone": 8000, "import_backbone": 4000, "probe_coarse": 8000,
                "cache_features": 8000}  # fmt: skip


def split_sizes(cfg: dict, dataset: str) -> dict[str, int]:
    """Samples per split of a configured dataset (train, val, test)."""
    settings = cfg["datasets"][dataset]
    source = settings["source"]
    if source == "synthetic":
        sizes = [settings.get(k, SYNTHETIC_DEFAULTS[k]) for k in ("n_train", "n_val", "n_test")]
    elif source in OFFICIAL and "val_size" in settings:
        train, test = OFFICIAL[source]
        val = settings["val_size"]
        from_test = settings.get("val_from") == "test"
        sizes = (train, val, test - val) if from_test else (train - val, val, test)
    else:
        sizes = SPLIT_SIZES.get(source, (50_000, 10_000, 10_000))
    return dict(zip(("train", "val", "test"), (int(n) for n in sizes), strict=True))


def train_size(cfg: dict, dataset: str) -> int:
    """Training samples of a configured dataset."""
    return split_sizes(cfg, dataset)["train"]


def num_classes(cfg: dict, dataset: str) -> tuple[int, int]:
    """(task classes, classes the backbone pretrains on) of a configured dataset."""
    settings = cfg["datasets"][dataset]
    if settings["source"] == "synthetic":
        coarse = settings.get("num_coarse", SYNTHETIC_DEFAULTS["num_coarse"])
        fine = settings.get("fine_per_coarse", SYNTHETIC_DEFAULTS["fine_per_coarse"])
        return coarse, coarse * fine
    return CLASSES.get(settings["source"], (10, 10))


def _arch(cfg: dict, backbone: str) -> tuple[str, float]:
    bb = cfg["backbones"][backbone]
    return bb["arch"], float(bb["width"])


def attach_floats(cfg: dict, backbone: str, point: str, form: str = "proto") -> int:
    """Values the cache holds per sample for one attach point in one form (``HEAD_FORMS``):
    proto = Gram or map, the smaller; pooled = 2·d·min(4, side)²; map = d·side²."""
    arch, width = _arch(cfg, backbone)
    family = FAMILY.get(arch, HE_CIFAR if arch in PARAMS_M else BOTTLENECK)
    channels, side = family.get(point.split(".")[0], (2048, IMAGE_SIDE))  # unknown: generous
    d = max(1, int(channels * width))
    if form == "pooled":
        return 2 * d * min(4, side) ** 2
    if form == "map":
        return d * side * side
    return min(d * (d + 1) // 2, d * side * side)


def layout_floats(cfg: dict, backbone: str) -> list[int]:
    """Values per sample of every dataset the cache stores (``exits.cache_layout``): a map
    that the proto form already stores is not stored twice."""
    values = []
    for point, forms in cache_layout(cfg, backbone).items():
        proto = attach_floats(cfg, backbone, point)
        for form in forms:
            value = attach_floats(cfg, backbone, point, form)
            if not (form == "map" and "proto" in forms and proto == value):
                values.append(value)
    return values


def cached_floats(cfg: dict, backbone: str) -> int:
    """Values the cache holds per sample over all attach points and forms."""
    return sum(layout_floats(cfg, backbone))


def branch_floats(cfg: dict, backbone: str, recipe: str) -> list[int]:
    """Values per sample a recipe's branches read, exit by exit (its head's form)."""
    form = HEAD_FORMS[cfg["recipes"][recipe]["head"]]
    return [attach_floats(cfg, backbone, p, form) for p in recipe_exits(cfg, recipe, backbone)]


def head_batch_size(cfg: dict) -> int:
    """The largest training batch any recipe uses (a head job holds one batch)."""
    sizes = [cfg["training"]["batch_size"]]
    sizes += [r["batch_size"] for r in cfg["recipes"].values() if "batch_size" in r]
    return int(max(sizes))


def _head_mem_mb(cfg: dict, dataset: str, values: list[int], arrays: int) -> int:
    """One batch of the features (stored, float32, tensor) + per-sample arrays; ``values``
    = the values per sample of each attach point read."""
    batch = head_batch_size(cfg) * sum(values) * 4 * 3
    samples = sum(split_sizes(cfg, dataset).values())
    per_sample = arrays * (LOGIT_ARRAYS * 4 * num_classes(cfg, dataset)[0] + 24)
    return int(BASE_MB + 1.5 * (batch + samples * per_sample) / MB)


def feature_mem_mb(cfg: dict, dataset: str, backbone: str, branch: int, recipe: str) -> int:
    """RAM of ``train_branch`` for one branch of a recipe, reading the cache in chunks."""
    value = branch_floats(cfg, backbone, recipe)[branch - 1]
    return _head_mem_mb(cfg, dataset, [value], arrays=2)


def joint_mem_mb(cfg: dict, dataset: str, backbone: str, recipe: str) -> int:
    """RAM of ``train_joint``: one batch of every exit of the recipe + per-sample arrays."""
    values = branch_floats(cfg, backbone, recipe)
    return _head_mem_mb(cfg, dataset, values, arrays=len(values) + 1)


def prepare_mem_mb(cfg: dict, dataset: str) -> int:
    """RAM of preparing a dataset: its training images as uint8 and float, plus a margin.
    An image folder is decoded and written batch by batch: the margin alone."""
    if cfg["datasets"][dataset]["source"] == "image_folder":
        return BASE_MB
    return BASE_MB + train_size(cfg, dataset) * PIXELS * 4 // MB


def _pixels(cfg: dict, dataset: str) -> int:
    """Bytes of one prepared image (32×32 RGB; an image folder's image_size)."""
    settings = cfg["datasets"][dataset]
    side = settings.get("image_size") if settings["source"] == "image_folder" else None
    side = side or IMAGE_SIDE
    return side * side * 3


def prepared_disk_mb(cfg: dict, dataset: str) -> int:
    """``prepared.h5``: uint8 images plus three int64 per sample."""
    return 1 + sum(split_sizes(cfg, dataset).values()) * (_pixels(cfg, dataset) + 24) // MB


def backbone_disk_mb(cfg: dict, backbone: str) -> int:
    """``backbone.pt`` (float32 weights; a probe is negligible beside it)."""
    arch, width = _arch(cfg, backbone)
    return 1 + int(PARAMS_M.get(arch, 23.5) * 1e6 * width**2 * 4 / MB)


def cache_disk_mb(cfg: dict, dataset: str, backbone: str, compact: str | None = None) -> int:
    """``features.h5`` (upper bound, ``calex_steps.data.cache_format.cache_bytes``)."""
    values = layout_floats(cfg, backbone)
    compact = compact or cfg["cache"]["compact"]
    sizes = split_sizes(cfg, dataset)
    return 1 + cache_bytes(sizes, values, num_classes(cfg, dataset)[0], compact) // MB


def trained_recipes(cfg: dict) -> list[str]:
    """Recipes of the study that train branches (those the others sweep included)."""
    names = []
    for name in cfg["study"]["recipes"]:
        recipe = cfg["recipes"][name]
        source = recipe.get("branches_from") or name
        if source not in names:
            names.append(source)
    return names


def branch_disk_mb(cfg: dict, dataset: str, backbone: str) -> int:
    """Every ``branch{l}.npz`` of the study's recipes and seeds (pred, conf, logits, confs)."""
    per_sample = 12 + 8 * num_classes(cfg, dataset)[0]
    exits = sum(len(recipe_exits(cfg, r, backbone)) for r in trained_recipes(cfg))
    files = exits * len(cfg["study"]["seeds"])
    return 1 + files * sum(split_sizes(cfg, dataset).values()) * per_sample // MB


def pretrain_runtime(cfg: dict, dataset: str, backbone: str) -> int:
    """Minutes for pretraining: epochs × size × per-epoch cost, with a CPU factor."""
    factor = 30 if cfg["device"] == "cpu" else 1
    return int(15 + factor * _epoch_min(cfg, dataset, backbone) * cfg["pretrain"]["epochs"])


def _epoch_min(cfg: dict, dataset: str, backbone: str) -> float:
    """GPU minutes of one pretraining epoch on this dataset."""
    arch, width = _arch(cfg, backbone)
    return GPU_MIN_PER_EPOCH.get(arch, 1.2) * width**2 * train_size(cfg, dataset) / 50_000
