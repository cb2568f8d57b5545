"""``source: image_folder``: a user's image folders at any size and mode, prepared in batches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from calex_steps.data import image_folder, prepared, sources
from calex_steps.errors import CalexError
from calex_steps.stages.prepare_dataset import main, run_prepare_dataset

CLASSES = ("ant", "bee", "cat")
MODES = ("RGB", "L", "RGBA", "P")


def class_image(label: int, size: int, seed: int) -> np.ndarray:
    """An RGB image whose dominant channel is its class, with seeded noise (uint8 size×size×3)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size, 3))
    img[..., label] += 180
    return img.clip(0, 255).astype(np.uint8)


def write_folder(root: Path, counts: dict[str, int], sizes=(64, 96)) -> Path:
    """``root/<split>/<class>/<n>.{png,jpg}``: sizes and modes alternate across files."""
    n = 0
    for split, per_class in counts.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size, mode = sizes[n % len(sizes)], MODES[n % len(MODES)]
                im = Image.fromarray(class_image(label, size, n)).convert(mode)
                suffix = ".jpg" if mode in ("RGB", "L") and n % 3 == 0 else ".png"
                im.save(folder / f"{i:03d}{suffix}")
                n += 1
    return root


def settings(root: Path, **extra) -> dict:
    return {"source": "image_folder", "root": str(root), "image_size": 32, **extra}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("imgs"), {"train": 6, "val": 3, "test": 4})


def test_every_size_and_mode_becomes_rgb_at_the_configured_size(folder, tmp_path):
    cfg = settings(folder, folders={"val": "val"}, resize=40)
    attrs = run_prepare_dataset("mine", cfg, tmp_path / "prepared.h5")
    assert attrs["class_names"] == list(CLASSES) and attrs["val_source"] == "val_folder"
    with h5py.File(tmp_path / "prepared.h5") as f:
        assert f["train/images"].shape == (18, 32, 32, 3)
        assert f["train/images"].chunks[1:] == (32, 32, 3)  # chunked by whole images
        assert [len(f[s]["labels"]) for s in ("train", "val", "test")] == [18, 9, 12]
        train = f["train/images"][()]
        labels = f["train/labels"][()]
    # the class channel dominates after grey/RGBA/palette conversion (grey files excepted)
    colour = np.array([i for i in range(18) if MODES[i % 4] != "L"])
    means = train[colour].reshape(len(colour), -1, 3).mean(1)
    assert (means.argmax(1) == labels[colour]).all()
    grey = np.array([i for i in range(18) if MODES[i % 4] == "L"])
    assert (train[grey][..., 0] == train[grey][..., 2]).all()  # grey promoted to 3 equal planes


def test_decode_resizes_the_shorter_side_then_crops_the_centre(tmp_path):
    img = np.zeros((60, 120, 3), np.uint8)
    img[:, 30:90] = 255  # a white centre band half as wide as the image
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = image_folder.decode_file(str(tmp_path / "wide.png"), 16, 16)
    assert out.shape == (16, 16, 3)
    assert out[:, 2:14].min() > 200  # the centre square is the white band


def test_sixteen_bit_grey_keeps_its_top_eight_bits(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = image_folder.decode_file(str(tmp_path / "deep.png"), 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[..., 0] == (ramp // 256)).all() and (out[..., 1] == out[..., 0]).all()


def test_missing_val_folder_carves_a_stratified_seeded_val_split(folder, tmp_path):
    cfg = settings(folder, val_from="train", val_size=6, split_seed=3)
    run_prepare_dataset("mine", cfg, tmp_path / "a.h5")
    val = prepared.read_prepared(tmp_path / "a.h5", "val")
    train = prepared.read_prepared(tmp_path / "a.h5", "train")
    assert np.bincount(val["labels"]).tolist() == [2, 2, 2]
    assert not set(val["index"]) & set(train["index"])
    assert sorted([*val["index"], *train["index"]]) == list(range(18))
    run_prepare_dataset("mine", cfg, tmp_path / "b.h5")
    assert (prepared.read_prepared(tmp_path / "b.h5", "val")["index"] == val["index"]).all()


def test_single_folder_layout_draws_train_val_test(tmp_path):
    root = write_folder(tmp_path / "src", {"all": 8})
    flat = tmp_path / "flat"
    (root / "all").rename(flat)
    cfg = settings(flat, layout="single_folder", val_size=6, test_size=6)
    run_prepare_dataset("mine", cfg, tmp_path / "p.h5")
    sizes = [len(prepared.read_prepared(tmp_path / "p.h5", s)["labels"]) for s in prepared.SPLITS]
    assert sizes == [12, 6, 6]


def test_truncated_image_stops_with_one_line_naming_it(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs", {"train": 3, "val": 2, "test": 2})
    buf = io.BytesIO()
    Image.fromarray(class_image(1, 96, 0)).save(buf, format="PNG")
    bad = root / "test" / "bee" / "001.png"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out = tmp_path / "prepared.h5"
    out.write_bytes(b"an earlier result")
    cfg = settings(root, folders={"val": "val"})
    argv = ["--dataset", "mine", "--settings", __import__("json").dumps(cfg), "--out", str(out)]
    assert main([*argv, "--workers", "2"]) == 1
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if str(bad) in line]
    assert len(problems) == 1 and "cannot be decoded" in problems[0]
    assert "Traceback" not in err
    assert out.read_bytes() == b"an earlier result"  # never destroy an existing result


def test_class_folder_missing_from_one_split_names_class_and_split(tmp_path):
    root = write_folder(tmp_path / "imgs", {"train": 2, "test": 2})
    for f in (root / "test" / "cat").iterdir():
        f.unlink()
    (root / "test" / "cat").rmdir()
    with pytest.raises(CalexError, match="'cat' is missing from split 'test'"):
        sources.prepare(settings(root, val_from="train", val_size=3))


def test_missing_root_is_reported_before_any_job(tmp_path):
    problem = sources.check_source(settings(tmp_path / "nowhere"))
    assert problem is not None and "nowhere/train" in problem and "folders" in problem


@pytest.mark.realdata
def test_real_cifar10_jpegs_as_a_folder_upscaled_to_64(tmp_path):
    """Real CIFAR-10 pixels (../shared/data) in the image-folder layout, upscaled to 64×64."""
    npz = SHARED_DATA / "cifar10_jpeg.npz"
    if not npz.is_file():
        pytest.skip(f"needs {npz}")
    d = np.load(npz)
    blob, off, labels = d["test_jpeg"], d["test_offsets"], d["test_labels"]
    classes = [str(c) for c in d["classes"]]
    picks = {}
    for split, start in (("train", 0), ("test", 40)):
        for c in (0, 1):
            rows = np.flatnonzero(labels == c)[start : start + 20]
            folder = tmp_path / "c10" / split / classes[c]
            folder.mkdir(parents=True)
            for i in rows:
                (folder / f"{i:05d}.jpg").write_bytes(blob[off[i] : off[i + 1]].tobytes())
            picks[(split, c)] = rows
    cfg = settings(tmp_path / "c10", image_size=64, val_from="test", val_size=10)
    run_prepare_dataset("c10", cfg, tmp_path / "p.h5")
    test = prepared.read_prepared(tmp_path / "p.h5", "test")
    assert test["images"].shape == (30, 64, 64, 3)
    listing = [*sorted((tmp_path / "c10/test" / classes[0]).iterdir()),
               *sorted((tmp_path / "c10/test" / classes[1]).iterdir())]  # fmt: skip
    for row, index in enumerate(test["index"]):  # same pixels as PIL's bilinear upscale
        ref = Image.open(listing[index]).convert("RGB").resize((64, 64), Image.BILINEAR)
        diff = np.abs(test["images"][row].astype(np.float32) - np.asarray(ref, np.float32))
        assert diff.mean() < 1.0
        assert test["labels"][row] == (0 if index < 20 else 1)


def test_image_size_defaults_to_the_images_own_size(tmp_path, capsys):
    """A folder of 48×40 images is stored at 40×40 (its shorter side, centre-cropped) with no
    image_size set; a folder of several sizes asks for image_size, listing what it found."""
    same = write_folder(tmp_path / "same", {"train": 4, "test": 2}, sizes=(40,))
    for path in same.rglob("*.*"):  # make every image 48 wide, 40 high
        with Image.open(path) as im:
            im.convert("RGB").resize((48, 40)).save(path)
    cfg = {"source": "image_folder", "root": str(same), "val_from": "train", "val_size": 3}
    run_prepare_dataset("same", cfg, tmp_path / "same.h5")
    with h5py.File(tmp_path / "same.h5") as f:
        assert f["test/images"].shape == (6, 40, 40, 3)
        assert f["train/images"].shape == (9, 40, 40, 3)
    mixed = write_folder(tmp_path / "mixed", {"train": 4, "test": 2}, sizes=(64, 96, 64))
    argv = ["--dataset", "mixed", "--settings", json.dumps(dict(cfg, root=str(mixed))),
            "--out", str(tmp_path / "mixed.h5")]  # fmt: skip
    assert main(argv) == 1
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("calex error:")]
    assert len(lines) == 1
    assert "have 2 sizes: 64×64 (12 images), 96×96 (6 images)" in lines[0]
    assert "set datasets.<key>.image_size" in lines[0]
    assert not (tmp_path / "mixed.h5").exists()
