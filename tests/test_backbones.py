"""Backbones: architectures, checkpoint loading, feature taps, preprocessing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from calex_steps.errors import CalexError
from calex_steps.models.backbones import (
    HE_MEAN,
    HE_STD,
    PadShortcut,
    build_backbone,
    classifier_module,
    scale_channels,
)
from calex_steps.models.checkpoints import load_weights
from calex_steps.models.inference import preprocess, run_with_taps

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HE_WEIGHTS = SHARED_DATA / "cifar10_resnet_weights"
needs_data = pytest.mark.skipif(
    not HE_WEIGHTS.is_dir(), reason=f"real data not found at {SHARED_DATA}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _he_checkpoint(depth: int) -> Path:
    return next(HE_WEIGHTS.glob(f"resnet{depth}-*.th"))


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_scale_channels_rounds_and_keeps_one():
    assert [scale_channels(c, 0.125) for c in (64, 128, 256, 512)] == [8, 16, 32, 64]
    assert scale_channels(64, 0.3) == 19
    assert scale_channels(64, 0.001) == 1


def test_resnet18_taps_at_width_0125():
    torch.manual_seed(0)
    model = build_backbone("resnet18", width=0.125, num_classes=7).eval()
    feats, penult, logits = run_with_taps(
        model, torch.randn(2, 3, 32, 32), ("layer1", "layer2", "layer3")
    )
    assert list(feats) == ["layer1", "layer2", "layer3"]
    assert [tuple(f.shape) for f in feats.values()] == [
        (2, 8, 32, 32),
        (2, 16, 16, 16),
        (2, 32, 8, 8),
    ]
    assert tuple(penult.shape) == (2, 64)
    assert tuple(logits.shape) == (2, 7)
    # the captured penultimate is exactly what the classifier saw
    torch.testing.assert_close(model.fc(penult), logits)


def test_resnet50_bottleneck_widths_and_strides():
    model = build_backbone("resnet50", width=0.125).eval()
    feats, penult, _ = run_with_taps(model, torch.zeros(1, 3, 32, 32), ("layer1", "layer4"))
    assert tuple(feats["layer1"].shape) == (1, 32, 32, 32)
    assert tuple(feats["layer4"].shape) == (1, 256, 4, 4)
    assert penult.shape[1] == 256
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert isinstance(block.shortcut, nn.Sequential)


def test_he_family_structure_and_parameter_count():
    model = build_backbone("resnet20")
    assert _param_count(model) == 269_722  # 0.27M, shortcuts carry no parameters
    assert round(_param_count(model) / 1e6, 2) == 0.27
    assert classifier_module(model)[0] == "linear"
    assert [len(getattr(build_backbone("resnet110"), f"layer{i}")) for i in (1, 2, 3)] == [18] * 3
    assert not hasattr(model, "layer4")


def test_pad_shortcut_subsamples_and_centres_channels():
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    out = PadShortcut(16, 32, stride=2)(x)
    assert tuple(out.shape) == (2, 32, 2, 2)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_resnet56_inner_attach_point():
    model = build_backbone("resnet56").eval()
    feats, penult, logits = run_with_taps(model, torch.zeros(3, 3, 32, 32), ["layer3.4"])
    assert tuple(feats["layer3.4"].shape) == (3, 64, 8, 8)
    assert tuple(penult.shape) == (3, 64) and tuple(logits.shape) == (3, 10)


def test_unknown_attach_point_lists_valid_names():
    model = build_backbone("resnet20")
    with pytest.raises(
        CalexError, match=r"'layer5'.*top level: conv1, bn1, layer1, layer2, layer3"
    ):
        run_with_taps(model, torch.zeros(1, 3, 32, 32), ["layer5"])
    with pytest.raises(CalexError, match=r"under 'layer3': layer3\.0, layer3\.1, layer3\.2$"):
        run_with_taps(model, torch.zeros(1, 3, 32, 32), ["layer3.9"])


def test_unknown_arch_lists_known_ones():
    with pytest.raises(
        CalexError, match=r"unknown backbone arch 'resnet19'; known: resnet18, resnet50"
    ):
        build_backbone("resnet19")
    with pytest.raises(CalexError, match="no classification model 'not_a_net'"):
        build_backbone("torchvision:not_a_net")
    with pytest.raises(CalexError, match="set width: 1.0"):
        build_backbone("torchvision:efficientnet_b0", width=0.5)


def test_torchvision_arch_by_name_builds_and_taps():
    model = build_backbone("torchvision:resnet18", num_classes=5).eval()
    feats, penult, logits = run_with_taps(model, torch.zeros(2, 3, 32, 32), ["layer2"])
    # ImageNet stem: stride-2 conv + max-pool take 32 -> 8, layer2 halves again
    assert tuple(feats["layer2"].shape) == (2, 128, 4, 4)
    assert tuple(penult.shape) == (2, 512) and tuple(logits.shape) == (2, 5)
    name, layer = classifier_module(build_backbone("torchvision:mobilenet_v3_small", num_classes=4))
    assert name == "classifier.3" and layer.out_features == 4


def test_classifier_module_requires_a_linear_layer():
    with pytest.raises(CalexError, match="no nn.Linear classifier"):
        classifier_module(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten()))


def test_preprocess_normalises_per_channel():
    images = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)  # 1×1×1×3
    out = preprocess(images, HE_MEAN, HE_STD)
    assert out.dtype == torch.float32 and tuple(out.shape) == (1, 3, 1, 1)
    expected = [(0.0 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (1.0 - 0.406) / 0.225]
    np.testing.assert_allclose(out.flatten().numpy(), expected, rtol=1e-6)
    with pytest.raises(CalexError, match="uint8 images N×H×W×3"):
        preprocess(torch.zeros(1, 3, 4, 4), HE_MEAN, HE_STD)


def _saved_resnet20(tmp_path: Path, edit) -> Path:
    """Save a resnet20 state dict (DataParallel prefix, under 'state_dict') after ``edit``."""
    state = {f"module.{k}": v for k, v in build_backbone("resnet20").state_dict().items()}
    edit(state)
    path = tmp_path / "bad.th"
    torch.save({"state_dict": state, "best_prec1": 0.0}, path)
    return path


def test_load_weights_accepts_all_containers(tmp_path):
    source = build_backbone("resnet20", num_classes=3)
    raw = source.state_dict()
    for container in (
        raw,
        {"model": raw},
        {"state_dict": {f"module.{k}": v for k, v in raw.items()}},
    ):
        target = load_weights(build_backbone("resnet20", num_classes=3), container)
        torch.testing.assert_close(target.linear.weight, source.linear.weight)
    path = tmp_path / "ok.pt"
    torch.save({"arch": "resnet20", "state_dict": raw}, path)
    target = load_weights(build_backbone("resnet20", num_classes=3), path)
    torch.testing.assert_close(target.layer2[0].conv1.weight, source.layer2[0].conv1.weight)


def test_corrupted_checkpoint_names_the_first_bad_key(tmp_path):
    def rename(state):
        state["module.layer1.0.convX.weight"] = state.pop("module.layer1.0.conv1.weight")

    path = _saved_resnet20(tmp_path, rename)
    with pytest.raises(CalexError) as info:
        load_weights(build_backbone("resnet20"), path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing key 'layer1.0.conv1.weight'" in message and "(and 1 more)" in message

    def reshape(state):
        state["module.layer2.1.conv2.weight"] = torch.zeros(32, 32, 1, 9)

    path = _saved_resnet20(tmp_path, reshape)
    with pytest.raises(
        CalexError,
        match=r"shape mismatch at 'layer2\.1\.conv2\.weight': "
        r"checkpoint \(32, 32, 1, 9\), model \(32, 32, 3, 3\)",
    ):
        load_weights(build_backbone("resnet20"), path)

    path = _saved_resnet20(tmp_path, lambda s: s.update({"module.extra": torch.zeros(1)}))
    with pytest.raises(
        CalexError,
        match=r"bad\.th does not fit CifarResNet: unexpected key 'extra'; check the arch, width",
    ):
        load_weights(build_backbone("resnet20"), path)


def test_load_weights_rejects_files_without_tensors(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"arch": "resnet20"}, path)
    with pytest.raises(CalexError, match="no state dict found"):
        load_weights(build_backbone("resnet20"), path)
    with pytest.raises(CalexError, match="does not exist"):
        load_weights(build_backbone("resnet20"), tmp_path / "absent.pt")


@needs_data
@pytest.mark.realdata
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_he_checkpoints_load_strictly(depth):
    path = _he_checkpoint(depth)
    model = load_weights(build_backbone(f"resnet{depth}"), path)
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert len(stored) == sum(1 for k in model.state_dict() if "num_batches_tracked" not in k)
    torch.testing.assert_close(model.linear.bias, stored["module.linear.bias"])


def _decode_cifar10_test(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``step``-th CIFAR-10 test image (uint8 N×32×32×3) and its label."""
    from PIL import Image

    data = np.load(SHARED_DATA / "cifar10_jpeg.npz")
    blob, offsets, labels = data["test_jpeg"], data["test_offsets"], data["test_labels"]
    picks = range(0, len(labels), step)
    images = [
        np.asarray(
            Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
        )
        for i in picks
    ]
    return np.stack(images), labels[::step].astype(np.int64)


@needs_data
@pytest.mark.realdata
def test_resnet20_accuracy_on_real_cifar10():
    images, labels = _decode_cifar10_test(step=20)  # 500 images, 50 per class
    assert images.shape == (500, 32, 32, 3) and np.bincount(labels).tolist() == [50] * 10
    model = load_weights(build_backbone("resnet20"), _he_checkpoint(20)).eval()
    with torch.inference_mode():
        logits = model(preprocess(torch.from_numpy(images), HE_MEAN, HE_STD))
    accuracy = float((logits.argmax(1).numpy() == labels).mean())
    assert accuracy > 0.70, accuracy
