"""Tests of the prepare_dataset stage on real CIFAR pixels in the official layouts."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from calex_steps.data import archives, prepared, sources, synthetic
from calex_steps.data.files import sha256_file
from calex_steps.data.splits import stratified_split
from calex_steps.errors import CalexError
from calex_steps.stages.prepare_dataset import main, run_prepare_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SMALL_SYNTH = {
    "source": "synthetic",
    "n_train": 60,
    "n_val": 20,
    "n_test": 20,
    "num_coarse": 3,
    "fine_per_coarse": 2,
}


def _jpeg_images(split: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode CIFAR-10 images ``idx`` of the shared JPEG archive: (N×32×32×3, labels, classes)."""
    d = np.load(SHARED / "cifar10_jpeg.npz")
    blob, off = d[f"{split}_jpeg"], d[f"{split}_offsets"]
    imgs = [
        np.asarray(Image.open(io.BytesIO(blob[off[i] : off[i + 1]].tobytes())).convert("RGB"))
        for i in idx
    ]
    return (
        np.stack(imgs),
        d[f"{split}_labels"][idx].astype(np.int64),
        [str(c) for c in d["classes"]],
    )


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """The shared CIFAR-10 written as official pickle batches by materialize.py."""
    if not SHARED.is_dir():
        pytest.skip(f"real-data fixtures need {SHARED} (../shared/data)")
    out = tmp_path_factory.mktemp("cifar10")
    script = SHARED / "materialize.py"
    subprocess.run([sys.executable, str(script), "cifar10-python", str(out)], check=True)
    return out / "cifar-10-batches-py"


@pytest.fixture(scope="session")
def cinic_root(tmp_path_factory) -> Path:
    """A CINIC-style tree train/valid/test/<class>/<n>.png of real CIFAR-10 images.

    Each split holds the first 4 train images (valid: the next 4; test: the
    first 4 test images) of every class, named by their CIFAR index.
    """
    if not SHARED.is_dir():
        pytest.skip(f"real-data fixtures need {SHARED} (../shared/data)")
    root = tmp_path_factory.mktemp("cinic") / "cinic10"
    labels = {s: np.load(SHARED / "cifar10_jpeg.npz")[f"{s}_labels"] for s in ("train", "test")}
    plan = {
        "train": ("train", slice(0, 4)),
        "valid": ("train", slice(4, 8)),
        "test": ("test", slice(0, 4)),
    }
    for split, (source, sl) in plan.items():
        idx = np.concatenate([np.flatnonzero(labels[source] == c)[sl] for c in range(10)])
        images, y, classes = _jpeg_images(source, idx)
        for i, img, label in zip(idx, images, y, strict=True):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory) -> Path:
    """The official cifar-100-python layout: real labels, the 20 real test images.

    ``train`` holds the official fine and coarse labels of the first 1000
    train images with the 20 real pixels reused cyclically; ``test`` holds the
    20 real test images with their labels.
    """
    if not SHARED.is_dir():
        pytest.skip(f"real-data fixtures need {SHARED} (../shared/data)")
    root = tmp_path_factory.mktemp("c100") / "cifar-100-python"
    root.mkdir()
    test = np.load(SHARED / "cifar100_test20.npz")
    train = np.load(SHARED / "cifar100_train_labels.npz")
    rows = test["images"].transpose(0, 3, 1, 2).reshape(20, 3072)  # HWC -> CHW planes
    files = {
        "train": {
            b"data": np.tile(rows, (50, 1)),
            b"fine_labels": train["fine_labels"][:1000].tolist(),
            b"coarse_labels": train["coarse_labels"][:1000].tolist(),
        },
        "test": {
            b"data": rows,
            b"fine_labels": test["fine_labels"].tolist(),
            b"coarse_labels": test["coarse_labels"].tolist(),
        },
        "meta": {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    }
    for name, content in files.items():
        with open(root / name, "wb") as f:
            pickle.dump(content, f)
    return root


@pytest.mark.realdata
def test_cifar100_reader_pixels_and_archive_labels(cifar100_root):
    test = np.load(SHARED / "cifar100_test20.npz")
    train = np.load(SHARED / "cifar100_train_labels.npz")
    raw = archives.read_cifar100_python(cifar100_root)
    assert raw["test"]["images"].dtype == np.uint8 and raw["test"]["images"].shape == (
        20,
        32,
        32,
        3,
    )
    np.testing.assert_array_equal(raw["test"]["images"], test["images"])  # CHW -> HWC is right
    np.testing.assert_array_equal(raw["test"]["labels"], test["coarse_labels"])
    np.testing.assert_array_equal(raw["train"]["fine_labels"], train["fine_labels"][:1000])
    np.testing.assert_array_equal(raw["train"]["labels"], train["coarse_labels"][:1000])
    np.testing.assert_array_equal(raw["train"]["images"][25], test["images"][5])
    assert raw["train"]["labels"].dtype == np.int64
    assert raw["class_names"][3] == "coarse3" and len(raw["fine_class_names"]) == 100


@pytest.mark.realdata
def test_cifar100_coarse_labels_come_from_the_archive(cifar100_root, tmp_path):
    # an archive whose coarse labels are shifted must be read as it is, not re-derived
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name in ("train", "test", "meta"):
        with open(cifar100_root / name, "rb") as f:
            content = archives._CifarUnpickler(f, encoding="bytes").load()
        if name == "test":
            content[b"coarse_labels"] = [(c + 1) % 20 for c in content[b"coarse_labels"]]
        with open(root / name, "wb") as f:
            pickle.dump(content, f)
    test = np.load(SHARED / "cifar100_test20.npz")
    raw = archives.read_cifar100_python(root)
    np.testing.assert_array_equal(
        raw["test"]["labels"], (test["coarse_labels"].astype(int) + 1) % 20
    )


@pytest.mark.realdata
def test_cifar100_prepare_val_from_train_and_from_test(cifar100_root):
    base = {"source": "cifar100_coarse", "root": str(cifar100_root), "split_seed": 0}
    splits, attrs = sources.prepare({**base, "val_from": "train", "val_size": 200})
    assert [len(splits[s]["labels"]) for s in prepared.SPLITS] == [800, 200, 20]
    both = np.concatenate([splits["train"]["index"], splits["val"]["index"]])
    np.testing.assert_array_equal(np.sort(both), np.arange(1000))
    fine_to_coarse = np.load(SHARED / "cifar100_train_labels.npz")["fine_to_coarse"]
    np.testing.assert_array_equal(
        splits["val"]["labels"], fine_to_coarse[splits["val"]["fine_labels"]]
    )
    assert attrs["num_classes"] == 20 and attrs["num_fine_classes"] == 100
    assert attrs["val_source"] == "train"

    splits, attrs = sources.prepare({**base, "val_from": "test", "val_size": 8})
    assert [len(splits[s]["labels"]) for s in prepared.SPLITS] == [1000, 8, 12]
    assert set(splits["val"]["index"]).isdisjoint(splits["test"]["index"])
    assert attrs["val_source"] == "test"


@pytest.mark.realdata
def test_cifar10_reader_matches_the_jpeg_source(cifar10_root):
    raw = archives.read_cifar10_python(cifar10_root)
    assert raw["train"]["images"].shape == (50000, 32, 32, 3)
    assert raw["test"]["images"].shape == (10000, 32, 32, 3)
    idx = np.array([0, 12345, 49999])
    images, labels, classes = _jpeg_images("train", idx)
    np.testing.assert_array_equal(raw["train"]["images"][idx], images)
    np.testing.assert_array_equal(raw["train"]["labels"][idx], labels)
    np.testing.assert_array_equal(raw["train"]["fine_labels"], raw["train"]["labels"])
    assert raw["class_names"] == classes and raw["test"]["index"][-1] == 9999

    splits, attrs = sources.prepare(
        {"source": "cifar10", "root": str(cifar10_root), "val_size": 5000, "split_seed": 0}
    )
    assert len(splits["train"]["labels"]) == 45000 and attrs["val_source"] == "train"
    np.testing.assert_array_equal(np.bincount(splits["val"]["labels"]), np.full(10, 500))


@pytest.mark.realdata
def test_cinic_reader_orders_classes_and_files_by_name(cinic_root):
    raw = archives.read_cinic10(cinic_root)
    classes = sorted(p.name for p in (cinic_root / "train").iterdir())
    assert raw["class_names"] == classes
    assert raw["valid"]["images"].shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(raw["train"]["labels"], np.repeat(np.arange(10), 4))
    first = sorted((cinic_root / "test" / classes[2]).glob("*.png"))[0]
    images, labels, _ = _jpeg_images("test", np.array([int(first.stem)]))
    np.testing.assert_array_equal(raw["test"]["images"][8], images[0])
    assert classes[labels[0]] == classes[2]


@pytest.mark.realdata
def test_stratified_split_on_official_cifar100_labels():
    if not SHARED.is_dir():
        pytest.skip(f"needs {SHARED} (../shared/data)")
    fine = np.load(SHARED / "cifar100_train_labels.npz")["fine_labels"]
    first, second = stratified_split(fine, 10000, seed=0)
    assert len(second) == 10000 and len(first) == 40000
    np.testing.assert_array_equal(np.sort(np.concatenate([first, second])), np.arange(50000))
    assert np.all(np.diff(first) > 0) and np.all(np.diff(second) > 0)
    np.testing.assert_array_equal(np.bincount(fine[second]), np.full(100, 100))
    again = stratified_split(fine, 10000, seed=0)[1]
    np.testing.assert_array_equal(again, second)
    assert not np.array_equal(stratified_split(fine, 10000, seed=1)[1], second)


def test_stratified_split_uneven_classes_within_one():
    labels = np.repeat([0, 1, 2, 3], [7, 13, 29, 51])
    _, second = stratified_split(labels, 33, seed=3)
    exact = np.array([7, 13, 29, 51]) * 33 / 100
    counts = np.bincount(labels[second], minlength=4)
    assert counts.sum() == 33 and np.all(np.abs(counts - exact) < 1)
    with pytest.raises(CalexError, match="val_size"):
        stratified_split(labels, 100, seed=0)


def test_synthetic_is_deterministic_hierarchical_and_graded():
    a, names, fine_names = synthetic.make_synthetic(300, 50, 200, 4, 3, seed=7)
    b, _, _ = synthetic.make_synthetic(300, 50, 200, 4, 3, seed=7)
    c, _, _ = synthetic.make_synthetic(300, 50, 200, 4, 3, seed=8)
    for split in prepared.SPLITS:
        for key in a[split]:
            assert a[split][key].tobytes() == b[split][key].tobytes()
    assert a["train"]["images"].tobytes() != c["train"]["images"].tobytes()
    tr = a["train"]
    assert tr["images"].shape == (300, 32, 32, 3) and tr["images"].dtype == np.uint8
    assert len(names) == 4 and len(fine_names) == 12
    for f in range(12):  # every fine class present, inside exactly one coarse class
        assert set(tr["labels"][tr["fine_labels"] == f]) == {f // 3}
    d = a["test"]["difficulty"]
    assert d.min() < 0.15 and d.max() > 0.85 and d.std() > 0.2
    # the colour cue decides easy samples and fades for hard ones: nearest class-mean colour
    mean_rgb = tr["images"].reshape(300, -1, 3).mean(1)
    easy = tr["difficulty"] < 0.3
    centroids = np.stack([mean_rgb[easy & (tr["labels"] == k)].mean(0) for k in range(4)])
    te = a["test"]
    test_rgb = te["images"].reshape(200, -1, 3).mean(1)
    pred = np.argmin(((test_rgb[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    hit = pred == te["labels"]
    assert hit[d < 0.3].mean() > 0.9
    assert hit[d > 0.7].mean() < hit[d < 0.3].mean() - 0.3


def test_check_source_names_the_expected_path(tmp_path):
    root = tmp_path / "data" / "cifar-100-python"
    msg = sources.check_source({"source": "cifar100_coarse", "root": str(root)})
    assert f"{root}/train" in msg and "cifar-100-python.tar.gz" in msg and "\n" not in msg
    assert (
        sources.check_source({"source": "cifar100_coarse", "root": str(root), "download": True})
        is None
    )
    msg = sources.check_source({"source": "cifar10", "root": str(tmp_path / "c10")})
    assert f"{tmp_path / 'c10'}/data_batch_1" in msg
    msg = sources.check_source({"source": "cinic10", "root": str(tmp_path / "cinic")})
    assert f"{tmp_path / 'cinic'}/train" in msg and "valid/" in msg
    assert sources.check_source({"source": "synthetic"}) is None
    assert "use one of" in sources.check_source({"source": "imagenet"})


def test_run_prepare_dataset_writes_a_readable_file(tmp_path):
    out = tmp_path / "results" / "synthetic" / "prepared.h5"
    attrs = run_prepare_dataset("synthetic", SMALL_SYNTH, out)
    assert attrs["num_classes"] == 3
    test = prepared.read_prepared(out, "test")
    assert test["images"].shape == (20, 32, 32, 3) and test["images"].dtype == np.uint8
    assert test["labels"].dtype == np.int64 and test["index"].dtype == np.int64
    stored = prepared.read_prepared_attrs(out)
    assert stored["dataset"] == "synthetic" and stored["num_fine_classes"] == 6
    assert stored["class_names"] == ["coarse00", "coarse01", "coarse02"]
    assert stored["settings"] == SMALL_SYNTH and stored["val_source"] == "generated"
    assert stored["calex_version"] and sorted(p.name for p in out.parent.iterdir()) == [
        "prepared.h5"
    ]
    with h5py.File(out) as f:
        assert set(f) == {"train", "val", "test"}


@pytest.mark.realdata
def test_cli_prepares_cinic_folders(cinic_root, tmp_path, capsys):
    out = tmp_path / "prepared.h5"
    settings = f'{{"source": "cinic10", "root": "{cinic_root}"}}'
    assert main(["--dataset", "cinic10", "--settings", settings, "--out", str(out)]) == 0
    assert prepared.read_prepared_attrs(out)["val_source"] == "valid"
    assert len(prepared.read_prepared(out, "val")["labels"]) == 40


def test_failed_preparation_keeps_the_existing_file(tmp_path, capsys):
    out = tmp_path / "prepared.h5"
    run_prepare_dataset("synthetic", SMALL_SYNTH, out)
    before = sha256_file(out)
    settings = '{"source": "cifar100_coarse", "root": "data/nowhere/cifar-100-python"}'
    assert main(["--dataset", "c100", "--settings", settings, "--out", str(out)]) == 1
    assert "data/nowhere/cifar-100-python/train" in capsys.readouterr().err
    splits, attrs = sources.prepare(SMALL_SYNTH)
    del splits["test"]  # fails half-way through writing
    with pytest.raises(KeyError):
        prepared.write_prepared(out, splits, {"dataset": "synthetic", **attrs})
    assert sha256_file(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared.h5"]


def test_broken_archive_files_name_the_file(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in (*archives.CIFAR10_BATCHES, "test_batch", "batches.meta"):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(CalexError, match=r"data_batch_1 lacks the entries \['labels'\]"):
        archives.read_cifar10_python(root)
    (root / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(CalexError, match="data_batch_1 is not a CIFAR python pickle"):
        archives.read_cifar10_python(root)
