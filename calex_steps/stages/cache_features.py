"""Stage `cache_features`: one backbone pass writes ``features.h5`` (docs/method.md#feature-cache).

    python -m calex_steps.stages.cache_features --data results/D/prepared.h5 \
        --backbone results/D/B/backbone.pt [--probe results/D/B/probe.pt] \
        --attach '{"layer1": ["proto"], "layer2": ["proto", "pooled"]}' --settings JSON \
        --device auto --out results/D/B/features.h5

Per split and attach point it stores the forms the study's heads read there
(``calex_steps.data.feature_cache.HEAD_FORMS``: the packed Gram matrix or the raw
map, whichever is smaller, for the prototype heads; max- and average-pooled maps for
SDN heads; raw maps for convolutional heads; a plain list of points = ``proto`` at
each), plus the final logits of backbone and classifier, labels and indices. It
streams batches straight into preallocated HDF5 datasets and renames the file into
place only when complete. Before writing, it estimates the file's size from one image
and refuses a cache the disk cannot hold; ``cache.compact`` chooses the stored dtype and filters
(``calex_steps.data.cache_format``).
"""

from __future__ import annotations

import json
import logging
import time

import h5py
import torch

from calex_steps import __version__
from calex_steps.cli import (
    add_runtime_args,
    parse_json_arg,
    resolve_device,
    stage_main,
    stage_parser,
)
from calex_steps.data.cache_format import (
    cache_bytes,
    check_compact,
    check_free_space,
    encode_features,
    feature_dataset_options,
)
from calex_steps.data.feature_cache import FORMS, SPLITS, features_id, form_dataset
from calex_steps.data.files import sha256_file
from calex_steps.errors import CalexError
from calex_steps.io import atomic_path, hdf5_output
from calex_steps.models.checkpoints import load_classifier, load_frozen_backbone
from calex_steps.models.flops import stage_macs
from calex_steps.models.inference import cache_entries, extract_batch, forward_order

log = logging.getLogger("calex")
OVERFIT_WARNING = 0.03  # val accuracy above test accuracy by more than this: warn


def write_split(
    out: h5py.File,
    src: h5py.Group,
    split: str,
    model,
    classifier,
    norm,
    attach: dict[str, list[str]],
    batch_size: int,
    device,
    compact: str = "none",
) -> float:
    """Stream one split into ``out``; returns the classifier's accuracy on it.

    ``attach`` maps each attach point (in forward order) to the forms stored there;
    ``compact`` (a ``cache.compact`` option) decides the feature datasets' dtype and filters.
    """
    n = len(src["labels"])
    group = out.create_group(split)
    for key in ("labels", "fine_labels", "index"):
        group.create_dataset(key, data=src[key][()])
    dsets, logits_ds = None, None
    correct = 0
    for start in range(0, n, batch_size):
        images = torch.from_numpy(src["images"][start : start + batch_size])
        logits, feats = extract_batch(model, classifier, images, norm, list(attach), device)
        entries = cache_entries(feats, attach)  # [(point number, form, kind, array)]
        if dsets is None:  # shapes are known after the first batch
            dsets = [_create_entry(group, e, feats, n, compact) for e in entries]
            logits_ds = group.create_dataset("logits", shape=(n, logits.shape[1]), dtype="f4")
        for ds, (_, _, _, entry) in zip(dsets, entries, strict=True):
            where = f"{split}/{ds.name.rsplit('/', 1)[-1]}"
            ds[start : start + len(entry)] = encode_features(entry, compact, where)
        logits_ds[start : start + len(logits)] = logits
        correct += int((logits.argmax(1) == src["labels"][start : start + len(logits)]).sum())
    return correct / max(n, 1)


def _create_entry(group: h5py.Group, entry, feats: dict, n: int, compact: str) -> h5py.Dataset:
    """The dataset of one (attach point, form) entry, with the attributes readers check."""
    num, form, kind, array = entry
    name = list(feats)[num - 1]
    d, h, w = feats[name].shape[1:]
    ds = group.create_dataset(
        form_dataset(group, num, form),
        shape=(n, *array.shape[1:]),
        chunks=(min(256, n), *array.shape[1:]),
        **feature_dataset_options(compact),
    )
    ds.attrs.update(kind=kind, d=d, h=h, w=w, attach_point=name, form=form)
    return ds


def entry_layout(src: h5py.File, model, classifier, norm, attach, device) -> tuple[list, list]:
    """Values per sample and kind (``gram``/``map``/``pooled``) of every stored entry, from
    one image."""
    images = torch.from_numpy(src["train"]["images"][:1])
    _, feats = extract_batch(model, classifier, images, norm, list(attach), device)
    entries = cache_entries(feats, attach)
    return [int(e[3][0].size) for e in entries], [e[2] for e in entries]


def check_cache_fits(src: h5py.File, model, classifier, bb, attach, device, compact, out):
    """Refuse a cache that would not fit the disk, before anything is written."""
    values, kinds = entry_layout(src, model, classifier, bb["normalization"], attach, device)
    sizes = {split: len(src[split]["labels"]) for split in SPLITS}
    needed = cache_bytes(sizes, values, classifier.out_features, compact)
    log.info("estimated cache size %.2f GB (cache.compact: %s)", needed / 1e9, compact)
    check_free_space(out, needed, kinds, compact)


def attach_layout(attach) -> dict[str, list[str]]:
    """``--attach`` as {point: [forms]}: a JSON list of points (``proto`` at each) or object."""
    if isinstance(attach, list):
        attach = {point: ["proto"] for point in attach}
    if not isinstance(attach, dict) or not attach:
        raise CalexError("--attach takes a JSON list of attach points or {point: [forms]}")
    for point, forms in attach.items():
        bad = [f for f in forms if f not in FORMS] if isinstance(forms, list) else [forms]
        if bad or not forms:
            raise CalexError(f"--attach: forms {forms!r} at '{point}'; choose from {FORMS}")
    return {point: sorted(set(forms), key=FORMS.index) for point, forms in attach.items()}


def run_cache_features(
    data, backbone_path, probe_path, attach, settings: dict, device: str, out
) -> dict:
    """Write the feature cache of all splits; returns the root attributes written.

    ``attach``: the attach points, as a list (the prototype heads' form at each) or a dict
    {point: [forms]} (``attach_layout``); the cache stores them in forward order.
    """
    attach = attach_layout(attach)
    compact = check_compact(settings.get("compact", "none"))
    dev = resolve_device(device)
    model, bb = load_frozen_backbone(backbone_path, dev)
    classifier = load_classifier(model, probe_path, dev)
    backbone_sha = sha256_file(backbone_path)
    classifier_sha = sha256_file(probe_path) if probe_path else backbone_sha
    accs = {}
    with h5py.File(data, "r") as src:
        num_classes = int(src.attrs["num_classes"])
        if classifier.out_features != num_classes:
            raise CalexError(
                f"the classifier of {backbone_path} has {classifier.out_features} outputs but "
                f"{data} has {num_classes} classes; a hierarchical dataset needs the probe"
            )
        data_attrs = {
            k: str(src.attrs[k]) for k in ("dataset", "source", "settings") if k in src.attrs
        }
        id_attrs = data_attrs if compact == "none" else {**data_attrs, "compact": compact}
        side = int(src["test"]["images"].shape[1])  # MACs at the images' own resolution
        points = forward_order(model, list(attach), side)  # JSON may have sorted them
        attach = {p: attach[p] for p in points}
        macs = stage_macs(bb["arch"], bb["width"], num_classes=num_classes,
                          attach_points=points, input_size=side)  # fmt: skip
        attrs = {
            "dataset": data_attrs.get("dataset", ""),
            "arch": bb["arch"],
            "width": float(bb["width"]),
            "backbone_sha256": backbone_sha,
            "classifier_sha256": classifier_sha,
            "num_classes": num_classes,
            "attach_points": json.dumps(points),
            "forms": json.dumps(attach),
            "stage_macs": json.dumps(macs),
            # a compact cache is another input to the heads: branch files record which
            "features_id": features_id(backbone_sha, classifier_sha, _id_points(attach), id_attrs),
            "calex_version": __version__,
            "compact": compact,
        }
        check_cache_fits(src, model, classifier, bb, attach, dev, compact, out)
        with atomic_path(out) as tmp, hdf5_output(tmp) as f:
            f.attrs.update(attrs)
            for split in SPLITS:
                tic = time.perf_counter()
                accs[split] = write_split(
                    f,
                    src[split],
                    split,
                    model,
                    classifier,
                    bb["normalization"],
                    attach,
                    settings["batch_size"],
                    dev,
                    compact,
                )
                log.info(
                    "%s: %d samples, classifier accuracy %.4f, %.1fs",
                    split,
                    len(src[split]["labels"]),
                    accs[split],
                    time.perf_counter() - tic,
                )
            f.attrs["accuracy"] = json.dumps(accs)
    if accs["val"] - accs["test"] > OVERFIT_WARNING:
        log.warning(
            "validation accuracy %.4f exceeds test accuracy %.4f by more than %.0f points: the "
            "backbone may have seen the validation images; calibrate on unseen data "
            "(datasets.<key>.val_from: test)",
            accs["val"],
            accs["test"],
            100 * OVERFIT_WARNING,
        )
    return attrs


def _id_points(attach: dict[str, list[str]]):
    """What the cache's ``features_id`` hashes of the layout: the list of points when every
    point stores only the prototype form (the identifiers of earlier caches stay valid)."""
    if all(forms == ["proto"] for forms in attach.values()):
        return list(attach)
    return attach


def build_parser():
    """Command-line interface of the stage."""
    p = stage_parser("cache_features", __doc__)
    p.add_argument("--data", required=True, help="prepared.h5 of the dataset")
    p.add_argument("--backbone", required=True, help="backbone.pt")
    p.add_argument("--probe", nargs="*", default=[], help="probe.pt (hierarchical datasets)")
    p.add_argument(
        "--attach", required=True,
        help="JSON list of attach-point module names, or {point: [forms]} (proto, pooled, map)",
    )  # fmt: skip
    p.add_argument("--settings", required=True, help="JSON: the config's cache block")
    add_runtime_args(p)
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Entry point: 0 on success, 1 on a CalexError (printed as one line)."""

    def run(a) -> None:
        probe = a.probe[0] if a.probe else None
        settings = parse_json_arg(a.settings, schema="cache")
        attach = parse_json_arg(a.attach, "--attach", "$defs.cache_layout")
        run_cache_features(a.data, a.backbone, probe, attach, settings, a.device,
                           a.out)  # fmt: skip

    return stage_main(build_parser, run, argv, hdf5_outputs=lambda a: [a.out])


if __name__ == "__main__":
    raise SystemExit(main())
