"""Small builders of real stage inputs for unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from calex_steps.data.synthetic import make_synthetic
from calex_steps.stages.cache_features import run_cache_features
from calex_steps.stages.pretrain_backbone import run_pretrain_backbone
from calex_steps.stages.probe_coarse import run_probe_coarse
from calex_steps.stages.sweep_margins import run_sweep_margins
from calex_steps.stages.train_branch import run_train_branch


class Payload:
    """What a malicious pickle holds: unpickling it creates the file ``marker`` (through
    ``open``, as any code a pickle may name would run). Tests assert the file never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(path: Path, marker: Path, like: object = None) -> None:
    """Write ``path`` as torch.save would write a calex file, with a payload inside: the
    dict ``like`` (e.g. a real checkpoint) plus an entry whose loading runs code."""
    content = dict(like) if isinstance(like, dict) else {"state_dict": {}}
    torch.save({**content, "note": Payload(marker)}, path)


# A narrow ResNet18 and pretraining settings small enough for unit tests.
TINY_BACKBONE = {
    "arch": "resnet18",
    "width": 0.125,
    "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
}
TINY_PRETRAIN = {
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "crop_padding": 4,
    "hflip": True,
    "seed": 0,
}


def write_synthetic_prepared(
    path: Path, n_train=300, n_val=120, n_test=120, num_coarse=4, fine_per_coarse=2, seed=0
) -> Path:
    """A prepared.h5 (docs/formats.md) holding a small synthetic set."""
    data = make_synthetic(n_train, n_val, n_test, num_coarse, fine_per_coarse, seed)
    splits = data[0] if isinstance(data, tuple) else data
    with h5py.File(path, "w") as f:
        f.attrs.update(
            dataset="synthetic",
            source="synthetic",
            num_classes=num_coarse,
            num_fine_classes=num_coarse * fine_per_coarse,
            settings=json.dumps({"seed": seed}),
        )
        for split in ("train", "val", "test"):
            g = f.create_group(split)
            for key in ("images", "labels", "fine_labels", "index"):
                g.create_dataset(key, data=np.asarray(splits[split][key]))
    return path


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cifar10_jpeg_subset(per_class: int, split: str = "test") -> tuple[np.ndarray, np.ndarray, list]:
    """The first ``per_class`` real CIFAR-10 images of each class from ../shared/data."""
    import io

    from PIL import Image

    data = np.load(SHARED_DATA / "cifar10_jpeg.npz")
    labels = data[f"{split}_labels"]
    offsets = data[f"{split}_offsets"]
    blob = data[f"{split}_jpeg"]
    picks = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    images = np.stack(
        [
            np.asarray(
                Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
            )
            for i in picks
        ]
    )
    return images, labels[picks].astype(np.int64), [str(c) for c in data["classes"]]


def write_prepared_arrays(path: Path, splits: dict, class_names: list, val_source="test") -> Path:
    """A prepared.h5 from in-memory splits {split: (images, labels)} of a flat label set."""
    with h5py.File(path, "w") as f:
        f.attrs.update(
            dataset="real",
            source="cifar10",
            num_classes=len(class_names),
            num_fine_classes=len(class_names),
            class_names=json.dumps(class_names),
            fine_class_names=json.dumps(class_names),
            val_source=val_source,
            split_seed=0,
            settings=json.dumps({}),
        )
        for split, (images, labels) in splits.items():
            g = f.create_group(split)
            g.create_dataset("images", data=images)
            g.create_dataset("labels", data=labels)
            g.create_dataset("fine_labels", data=labels)
            g.create_dataset("index", data=np.arange(len(labels)))
    return path


# ---- a real tiny run built by calling the stage functions ------------------------

CASCADE_BACKBONE = {"arch": "resnet18", "width": 0.125,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
PRETRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "crop_padding": 4, "hflip": True, "seed": 0}  # fmt: skip
PROBE = {
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "seed": 0,
}
RECIPE = {"head": "augmented", "target": "kd", "kd_temperature": 4.0, "weighting": "survivor",
          "survivor_mode": "sampling", "prototypes": 16, "cls_epochs": 3, "conf_epochs": 3,
          "lr": 3e-3, "weight_decay": 0.0, "batch_size": 128}  # fmt: skip
MARGINS = [0.01, 0.05, 0.1, 0.2, 0.4, 0.8]


def make_tiny_cascade_run(top: Path) -> dict:
    """results/synthetic/r18tiny/calexnet/seed0 of a real tiny pipeline (stage functions)."""
    torch.set_num_threads(1)
    root = top / "results" / "synthetic"
    root.mkdir(parents=True)
    prepared = write_synthetic_prepared(root / "prepared.h5")
    with h5py.File(prepared, "a") as f:
        f.attrs["class_names"] = json.dumps([f"coarse{i}" for i in range(4)])
    bb_dir = root / "r18tiny"
    bb_dir.mkdir()
    run_pretrain_backbone(prepared, CASCADE_BACKBONE, PRETRAIN, "cpu", bb_dir / "backbone.pt")
    run_probe_coarse(prepared, bb_dir / "backbone.pt", PROBE, "cpu", bb_dir / "probe.pt")
    run_cache_features(prepared, bb_dir / "backbone.pt", bb_dir / "probe.pt",
                       ["layer1", "layer2", "layer3"], {"batch_size": 128}, "cpu",
                       bb_dir / "features.h5")  # fmt: skip
    run = bb_dir / "calexnet" / "seed0"
    for b in (1, 2, 3):
        prev = [run / f"branch{k}.npz" for k in range(1, b)]
        run_train_branch(bb_dir / "features.h5", b, prev, RECIPE, 0, "cpu",
                                      run / f"branch{b}.pt", run / f"branch{b}.npz",
                                      recipe="calexnet")  # fmt: skip
    split = run / "split0"
    outs = [split / name for name in ("sweep.csv", "thresholds.npz", "exits.npz", "per_class.csv")]
    branches = [run / f"branch{b}.npz" for b in (1, 2, 3)]
    settings = {"margins": MARGINS, "calibration": "cascade"}
    run_sweep_margins(bb_dir / "features.h5", branches, settings, *outs)
    with h5py.File(prepared, "r") as f:
        images = torch.from_numpy(f["test"]["images"][...])
    return {"run": run, "split": split, "prepared": prepared, "images": images, "root": bb_dir}


HEAD_EXITS = {  # head kind -> its exits (blocks and stages, not the cache's default points)
    "sdn": ["layer1.0", "layer2", "layer3.0", "layer4.0"],
    "augmented": ["layer1.0", "layer3.0"],
    "basic": ["layer2.0", "layer3"],
    "pteenet_conv2": ["layer2.0", "layer3.0"],
    "msdnet": ["layer1.0", "layer2"],
    "ztw_cascading": ["layer1.0", "layer2", "layer3.0"],
}


def make_every_form_cache(tiny: dict, root: Path) -> Path:
    """A cache of the tiny run's backbone holding every form at the union of HEAD_EXITS
    (``root``: backbone.pt, probe.pt and features.h5)."""
    from calex_steps.data.feature_cache import HEAD_FORMS
    from calex_steps.workflow.exits import forward_key

    layout: dict[str, set] = {}
    for kind, exits in HEAD_EXITS.items():
        for point in exits:
            layout.setdefault(point, set()).add(HEAD_FORMS[kind])
    forms = ("proto", "pooled", "map")
    attach = {p: sorted(layout[p], key=forms.index) for p in sorted(layout, key=forward_key)}
    for name in ("backbone.pt", "probe.pt"):
        (root / name).write_bytes((tiny["root"] / name).read_bytes())
    run_cache_features(tiny["prepared"], root / "backbone.pt", root / "probe.pt", attach,
                       {"batch_size": 128}, "cpu", root / "features.h5")  # fmt: skip
    return root


def train_head_kind(cache: Path, kind: str, sweep_dir: Path) -> tuple[Path, Path, dict]:
    """Branches of head ``kind`` at its HEAD_EXITS trained on ``cache`` (once: a second
    call reuses them) and swept at margins 0.05, 0.2, 0.4 into ``sweep_dir``: the run
    folder, thresholds.npz and the arrays of exits.npz."""
    features = cache / "features.h5"
    run = cache / kind / "seed0"
    exits_at = HEAD_EXITS[kind]
    recipe = RECIPE | {"head": kind, "target": "labels", "weighting": "uniform",
                       "cls_epochs": 2, "conf_epochs": 2}  # fmt: skip
    recipe.pop("kd_temperature")
    recipe.pop("survivor_mode")
    if kind == "ztw_cascading":
        recipe["cascade_input"] = True
    for b, point in enumerate(exits_at, start=1):
        if (run / f"branch{b}.npz").is_file():
            continue
        prev = [run / f"branch{k}.npz" for k in range(1, b)]
        run_train_branch(features, b, prev, recipe, 0, "cpu", run / f"branch{b}.pt",
                         run / f"branch{b}.npz", recipe=kind, exit_point=point)  # fmt: skip
    branches = [run / f"branch{b}.npz" for b in range(1, len(exits_at) + 1)]
    outs = [sweep_dir / n for n in ("sweep.csv", "thr.npz", "exits.npz", "pc.csv")]
    run_sweep_margins(features, branches, {"margins": [0.05, 0.2, 0.4], "calibration": "full"},
                      *outs)  # fmt: skip
    with np.load(outs[2]) as z:
        return run, outs[1], dict(z)
