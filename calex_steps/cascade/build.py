"""Assembling the cascade module of one trained run from its files (docs/method.md#latency).

``build_cascade`` reads the backbone (and probe), the feature cache's
attributes, the branch heads and one margin's thresholds, and returns a
``CascadeModel`` in eval mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from calex_steps.cascade.exit_heads import inference_head
from calex_steps.cascade.module import CascadeModel, split_backbone
from calex_steps.cascade.sweep import margin_key
from calex_steps.data.branch_files import exit_points
from calex_steps.data.feature_cache import HEAD_FORMS, attach_index, feature_kinds, features_meta
from calex_steps.errors import CalexError
from calex_steps.models.checkpoints import load_checkpoint, load_classifier, load_frozen_backbone
from calex_steps.models.heads import build_head


def load_head(path: str | Path, features_id: str, branch: int) -> tuple[torch.nn.Module, dict]:
    """A trained branch head from ``branch{l}.pt`` in eval mode, checked against the cache."""
    ckpt = load_checkpoint(path)
    if ckpt.get("features_id") != features_id or int(ckpt.get("branch", branch)) != branch:
        raise CalexError(
            f"{path} is branch {ckpt.get('branch')} of features '{ckpt.get('features_id')}', "
            f"expected branch {branch} of '{features_id}'; pass the heads of this run"
        )
    head = build_head(ckpt["head_config"])
    head.load_state_dict(ckpt["state_dict"])
    return head.eval().requires_grad_(False), ckpt


def load_thresholds(path: str | Path, margin: float) -> tuple[torch.Tensor, list[float] | None]:
    """The L×C thresholds of one margin from ``thresholds.npz``, and the fitted per-branch
    temperatures when the sweep stored them (``temperature``)."""
    if not Path(path).is_file():
        raise CalexError(f"thresholds file {path} does not exist; run sweep_margins first")
    with np.load(path) as z:
        key = margin_key(margin)
        if key not in z.files:
            margins = [k[1:] for k in z.files if k.startswith("m")]
            raise CalexError(f"{path} has no margin {margin:g}; choose one of {', '.join(margins)}")
        temps = [float(t) for t in z["temperature"]] if "temperature" in z.files else None
        return torch.from_numpy(z[key]), temps


def load_ensembles(paths: list[Path]) -> list[tuple[list[float], list[float]]]:
    """ZTW's fitted (a, b) of every exit from ``ztw_ensemble{l}.npz`` (their ``meta``)."""
    out = []
    for path in paths:
        if not Path(path).is_file():
            raise CalexError(f"ZTW ensemble file {path} does not exist; run ztw_ensemble first")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        if "ensemble_a" not in meta or "ensemble_b" not in meta:
            raise CalexError(f"{path} has no ensemble_a/ensemble_b in its meta; rerun ztw_ensemble")
        out.append((meta["ensemble_a"], meta["ensemble_b"]))
    return out


def run_paths(run_dir: str | Path) -> dict[str, Path]:
    """Default inputs of a run dir ``results/{d}/{b}/{r}/seed{s}`` (probe only if present)."""
    run = Path(run_dir)
    root = run.parent.parent
    probe = root / "probe.pt"
    return {
        "backbone": root / "backbone.pt",
        "probe": probe if probe.is_file() else None,
        "features": root / "features.h5",
        "thresholds": run / "split0" / "thresholds.npz",
    }


def boost_factor(ckpt: dict) -> float:
    """BoostNet's additive factor r of a branch checkpoint (0: the logits are the head's own)."""
    settings = ckpt.get("settings") or {}
    return float(settings["boost_r"]) if settings.get("target") == "boostnet" else 0.0


def build_cascade(run_dir: str | Path | None, margin: float, *, backbone=None, probe=None,
                  features=None, thresholds=None, branches=None, class_names=None,
                  exit_signal: str = "branch", ensembles=None, head_input: str = "cache",
                  channels_last: bool = False,
                  device: str | torch.device = "cpu") -> CascadeModel:  # fmt: skip
    """Assemble the cascade of one trained run at one margin, in eval mode on ``device``.

    Args:
        run_dir: ``results/{d}/{b}/{r}/seed{s}``; it supplies every path not given
            (backbone, probe, features two levels up; branch{l}.pt and, for ZTW,
            ztw_ensemble{l}.npz inside; thresholds in ``split0/``).
        margin: a CPM margin present in ``thresholds.npz``.
        backbone, probe, features, thresholds: explicit paths (probe None = backbone fc).
        branches: explicit ``branch{l}.pt`` paths, in cascade order (a recipe with
            ``branches_from`` uses another run's heads).
        class_names: names of the C classes (default ``class0..``).
        exit_signal: the recipe's exit signal (``cascade.signals.SIGNALS``).
        ensembles: explicit ``ztw_ensemble{l}.npz`` paths (exit signal ztw_ensemble).
        head_input: ``cache`` = a prototype head's M from the form the cache stored (exact
            agreement with the sweep), ``map`` = M from the raw map at every branch.
        channels_last: run the convolutions on channels-last tensors.
    """
    if head_input not in ("cache", "map"):
        raise CalexError(f"head_input '{head_input}' is not one of cache, map")
    paths = run_paths(run_dir) if run_dir is not None else {}
    backbone = backbone or paths.get("backbone")
    features = features or paths.get("features")
    thresholds = thresholds or paths.get("thresholds")
    probe = probe if probe is not None else paths.get("probe")
    if not (backbone and features and thresholds):
        raise CalexError("build_cascade needs --run-dir or the backbone, features and thresholds")
    meta = features_meta(features)  # CalexError when missing
    if branches is None:
        count = len(sorted(Path(run_dir).glob("branch*.pt")))
        branches = [Path(run_dir) / f"branch{b}.pt" for b in range(1, count + 1)]
    if not branches:
        raise CalexError(f"no branch heads (branch1.pt ...) in {run_dir}; pass --branches")
    count = len(branches)
    if exit_signal == "ztw_ensemble" and not ensembles:
        ensembles = [Path(run_dir) / f"ztw_ensemble{b}.npz" for b in range(1, count + 1)]
    model, bb = load_frozen_backbone(backbone, "cpu")
    classifier = load_classifier(model, probe, "cpu")
    loaded = [load_head(p, str(meta["features_id"]), b) for b, p in enumerate(branches, 1)]
    attach = exit_points([c for _, c in loaded], list(meta["attach_points"]), "the heads")
    segments, tail = split_backbone(model, classifier, attach)
    forms = [HEAD_FORMS[h.config["kind"]] for h, _ in loaded]
    if head_input == "cache":
        points = [attach_index(meta, a, features) for a in attach]
        kinds = feature_kinds(features, points, forms)
    else:
        kinds = ["pooled" if f == "pooled" else "map" for f in forms]
    with_conf = exit_signal == "branch"
    pairs = zip(loaded, kinds, strict=True)
    heads = [inference_head(h, kind, with_conf) for (h, _), kind in pairs]
    thr, temps = load_thresholds(thresholds, margin)
    num_classes = int(thr.shape[1])
    names = list(class_names) if class_names else [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes or classifier.out_features != num_classes:
        raise CalexError(
            f"{len(names)} class names, a {classifier.out_features}-way classifier and "
            f"{num_classes} threshold columns disagree; pass the matching files"
        )
    ens = load_ensembles(ensembles) if exit_signal == "ztw_ensemble" else None
    info = {"recipe": loaded[0][1].get("recipe"), "seed": loaded[0][1].get("seed"),
            "margin": float(margin), "exit_signal": exit_signal, "arch": bb["arch"],
            "width": bb["width"], "attach_points": attach, "feature_kinds": kinds,
            "stage_macs": meta["stage_macs"], "head_macs": [c["head_macs"] for _, c in loaded],
            "input_size": int(bb.get("input_size", 32)),
            "normalization": bb["normalization"]}  # fmt: skip
    cascade = CascadeModel(segments, heads, tail, thr, bb["normalization"]["mean"],
                           bb["normalization"]["std"], names, exit_signal,
                           boost_factor(loaded[0][1]), info, temps, ens,
                           channels_last)  # fmt: skip
    cascade = cascade.eval().requires_grad_(False).to(device)
    if channels_last:
        cascade = cascade.to(memory_format=torch.channels_last)
    return cascade
