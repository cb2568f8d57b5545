"""What each job asks the scheduler for: memory and run time, estimated from the configuration.

The rules call these for their ``resources:``; the README's resource table is
generated from the same functions. Pure arithmetic on the validated config.
"""

from __future__ import annotations

# Training-split sizes of the real sources (synthetic sets and folders give their own).
TRAIN_SIZE = {"cifar100_coarse": 40_000, "cifar10": 45_000, "cinic10": 90_000}
# Minutes per pretraining epoch at full width on 50k images, one A10G.
GPU_MIN_PER_EPOCH = {"resnet18": 0.4, "resnet50": 1.2}
# Channels (before the ResNet50 expansion ×4) and side of each stage's map at 32×32 input.
STAGE_SHAPE = {
    "layer1": (64, 32),
    "layer2": (128, 16),
    "layer3": (256, 8),
    "layer4": (512, 4),
}


def train_size(cfg: dict, dataset: str) -> int:
    """Training samples of a configured dataset."""
    settings = cfg["datasets"][dataset]
    return settings.get("n_train") or TRAIN_SIZE.get(settings["source"], 50_000)


def pretrain_runtime(cfg: dict, dataset: str, backbone: str) -> int:
    """Minutes for pretraining: epochs × size × per-epoch cost, with a CPU factor."""
    bb = cfg["backbones"][backbone]
    per_epoch = GPU_MIN_PER_EPOCH.get(bb["arch"], 1.0) * bb["width"] ** 2
    per_epoch *= train_size(cfg, dataset) / 50_000
    factor = 30 if cfg["device"] == "cpu" else 1
    return int(15 + factor * per_epoch * cfg["pretrain"]["epochs"])


def attach_floats(cfg: dict, backbone: str, point: str) -> int:
    """Floats the cache holds per sample for one attach point (Gram or map, the smaller)."""
    bb = cfg["backbones"][backbone]
    expansion = 4 if bb["arch"] == "resnet50" else 1
    channels, side = STAGE_SHAPE.get(point.split(".")[0], (512, 32))  # unknown: generous
    d = max(1, int(channels * expansion * bb["width"]))
    return min(d * (d + 1) // 2, d * side * side)


def cached_floats(cfg: dict, backbone: str) -> int:
    """Floats the cache holds per sample over all attach points."""
    points = cfg["backbones"][backbone]["attach_points"]
    return sum(attach_floats(cfg, backbone, point) for point in points)


def feature_mem_mb(cfg: dict, dataset: str, backbone: str, branch: int) -> int:
    """RAM for one branch's cached features of all three splits, plus a working margin."""
    point = cfg["backbones"][backbone]["attach_points"][branch - 1]
    floats = attach_floats(cfg, backbone, point)
    return int(2000 + 3 * 4 * floats * train_size(cfg, dataset) / 2**20)


def joint_mem_mb(cfg: dict, dataset: str, backbone: str) -> int:
    """RAM of a joint job: every attach point of all three splits (each at most the
    train split's size), float32, plus a working margin."""
    size = train_size(cfg, dataset)
    return int(2000 + 3 * 4 * cached_floats(cfg, backbone) * size / 2**20)


def prepare_mem_mb(cfg: dict, dataset: str) -> int:
    """RAM of preparing a dataset: its training images as uint8 and float, plus a margin.
    An image folder is decoded and written batch by batch: the margin alone."""
    if cfg["datasets"][dataset]["source"] == "image_folder":
        return 2000
    return 2000 + train_size(cfg, dataset) * 3072 * 4 // 2**20
