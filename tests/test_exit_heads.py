"""The literature's heads (sdn, pteenet_conv2, msdnet, ztw_cascading): the pooled cache form,
training, the cascade input, saving, and their inference forms on the raw map."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.cascade.exit_heads import ExitHead, MapExitHead, inference_head
from calex_steps.errors import CalexError
from calex_steps.models.exit_heads import (
    MsdnetHead,
    PteenetConv2Head,
    SdnHead,
    ZtwCascadingHead,
    pooled_features,
)
from calex_steps.models.gram import pack_gram
from calex_steps.models.heads import HEAD_KINDS, build_head, head_form, new_head

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 3
LITERATURE = ("sdn", "pteenet_conv2", "msdnet", "ztw_cascading")


def cache_form(head: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """What the feature cache stores for this head: pooled, the map, or the packed Gram."""
    if head_form(head.config["kind"]) == "proto":
        return pack_gram(fmap)
    return head.cache_input(fmap)


def toy_maps(n: int = 96, d: int = 4, size: int = 8, seed: int = 0):
    """Noise maps with a bright 2×2 patch at a random place; the class is its channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    x = 0.3 * torch.rand(n, d, size, size, generator=g)
    rows, cols = torch.randint(0, size - 1, (2, n), generator=g)
    for i in range(n):
        x[i, y[i], rows[i] : rows[i] + 2, cols[i] : cols[i] + 2] += 1.0
    return x, y


def test_pooled_features_by_hand():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    pooled = pooled_features(x)
    assert pooled.shape == (1, 2, 1, 4, 4) and pooled.dtype == torch.float32
    i, j = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    # 2×2 windows: max = bottom-right entry, mean = the window's centre value
    assert torch.equal(pooled[0, 0, 0], (2 * i + 1) * 8 + 2 * j + 1)
    assert torch.equal(pooled[0, 1, 0], 16 * i + 2 * j + 4.5)
    # a side below 4 is kept: 3×5 -> 3×4, and a 2×2 map is its own max and average
    assert pooled_features(torch.rand(2, 5, 3, 5)).shape == (2, 2, 5, 3, 4)
    small = torch.rand(2, 5, 2, 2)
    assert torch.equal(pooled_features(small), torch.stack([small, small], dim=1))


def test_pooled_features_ignore_memory_format_and_batch_companions():
    x = torch.rand(7, 64, 7, 7)  # 7 -> 4 overlapping windows: the case where kernels differ
    pooled = pooled_features(x)
    assert torch.equal(pooled_features(x.contiguous(memory_format=torch.channels_last)), pooled)
    assert torch.equal(pooled_features(x[2:4]), pooled[2:4])


def test_sdn_head_mixes_with_one_scalar_alpha():
    torch.manual_seed(0)
    head = SdnHead(d=2, h=8, w=8, num_classes=NUM_CLASSES)
    params = dict(head.named_parameters())
    assert sorted(params) == [
        "cls.bias",
        "cls.weight",
        "conf.bias",
        "conf.weight",
        "features.alpha",
    ]
    alpha = params["features.alpha"]
    assert alpha.shape == (1,) and 0.0 <= float(alpha.detach()) < 1.0  # SDN's U[0, 1) draw
    assert head.cls.in_features == 2 * 16
    with torch.no_grad():
        alpha.fill_(0.25)
    pooled = pooled_features(torch.rand(5, 2, 8, 8))
    expected = (0.25 * pooled[:, 0] + 0.75 * pooled[:, 1]).reshape(5, 32)
    assert torch.allclose(head.responses(pooled), expected)
    cls, conf = head(pooled)
    assert torch.allclose(cls, expected @ head.cls.weight.t() + head.cls.bias)
    assert conf.shape == (5, NUM_CLASSES)
    assert SdnHead(d=2, h=3, w=3, num_classes=4).cls.in_features == 2 * 9  # s = min(4, H)


def test_structures_as_their_authors_built_them():
    pte = PteenetConv2Head(d=6, num_classes=NUM_CLASSES)
    convs = [m for m in pte.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride, c.padding) for c in convs] == [
        (6, 6, (1, 1), (1, 1))
    ] * 2
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in pte.features) == 2
    assert pte.cls.in_features == 6
    msd = MsdnetHead(d=6, num_classes=NUM_CLASSES)
    convs = [m for m in msd.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (6, 128, (2, 2)),
        (128, 128, (2, 2)),
    ]
    assert msd.cls.in_features == 128 and not msd.cls.bias.any()
    ztw = ZtwCascadingHead(d=6, h=8, w=8, num_classes=NUM_CLASSES, cascade_input_dim=NUM_CLASSES)
    (conv,) = [m for m in ztw.features if isinstance(m, nn.Conv2d)]
    assert (conv.out_channels, conv.stride, conv.bias is not None) == (6, (1, 1), True)
    assert ztw.cls.in_features == 6 * 16 + NUM_CLASSES
    assert [n for n, p in ztw.named_parameters() if p.numel() == 1] == ["features.3.alpha"]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_head_learns_on_a_toy_task(kind):
    torch.manual_seed(0)
    maps, y = toy_maps()
    cascade = NUM_CLASSES if kind == "ztw_cascading" else 0
    head = new_head(kind, d=4, h=8, w=8, num_classes=NUM_CLASSES, cascade_input_dim=cascade,
                    prototypes=8)  # fmt: skip
    prev = torch.randn(len(y), NUM_CLASSES) if cascade else None
    x = cache_form(head, maps)
    opt = torch.optim.Adam(head.classification_parameters(), lr=3e-2)
    head.train()
    losses = []
    for _ in range(40):
        cls, conf = head(x, prev)
        assert cls.shape == conf.shape == (len(y), NUM_CLASSES)
        loss = F.cross_entropy(cls, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert head.conf.weight.grad is None  # stage 1 leaves the conf layer alone
    head.eval()
    with torch.no_grad():
        accuracy = (head(x, prev)[0].argmax(1) == y).float().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("kind", LITERATURE)
def test_stage_one_parameters_are_all_but_conf(kind):
    head = new_head(kind, d=4, h=8, w=8, num_classes=NUM_CLASSES)
    stage1 = {id(p) for p in head.classification_parameters()}
    conf = {id(p) for p in head.conf.parameters()}
    everything = {id(p) for p in head.parameters()}
    assert stage1 == everything - conf and len(conf) == 2


def test_cascade_input_is_detached_layer_normalised_and_required():
    torch.manual_seed(1)
    head = ZtwCascadingHead(d=4, h=8, w=8, num_classes=NUM_CLASSES, cascade_input_dim=5)
    x = torch.rand(6, 4, 8, 8)
    prev = torch.randn(6, 5, requires_grad=True)
    rep = head.represent(head.responses(x), prev)
    assert rep.shape == (6, 4 * 16 + 5)
    mean, var = prev.mean(1, keepdim=True), prev.var(1, unbiased=False, keepdim=True)
    assert torch.allclose(rep[:, 64:], (prev - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    cls, conf = head(x, prev)
    (cls.sum() + conf.sum()).backward()
    assert prev.grad is None and head.features[0].weight.grad is not None
    assert not torch.allclose(cls, head(x, -prev.detach())[0])
    with pytest.raises(ValueError, match="cascade input"):
        head(x)
    first = ZtwCascadingHead(d=4, h=8, w=8, num_classes=NUM_CLASSES)  # branch 1: none
    assert first(x)[0].shape == (6, NUM_CLASSES)


def test_batchnorm_trains_on_the_batch_and_infers_with_running_statistics():
    torch.manual_seed(2)
    head = PteenetConv2Head(d=4, num_classes=NUM_CLASSES)
    bn = head.features[1]
    x, other = torch.rand(4, 4, 6, 6), torch.rand(4, 4, 6, 6) + 1.0
    head.train()
    alone = head(x)[0]
    mixed = head(torch.cat([x[:2], other[:2]]))[0]
    assert not torch.allclose(alone[:2], mixed[:2])  # batch statistics: companions matter
    assert int(bn.num_batches_tracked) == 2 and not torch.equal(bn.running_mean, torch.zeros(4))
    head.eval()
    stats = bn.running_mean.clone()
    alone = head(x)[0]
    assert torch.equal(head(torch.cat([x[:2], other[:2]]))[0][:2], alone[:2])
    assert torch.equal(bn.running_mean, stats) and int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_config_and_state_dict_rebuild_the_head(kind):
    torch.manual_seed(3)
    cascade = NUM_CLASSES if kind in ("ztw_cascading", "basic") else 0
    head = new_head(kind, d=4, h=6, w=6, num_classes=NUM_CLASSES, cascade_input_dim=cascade,
                    prototypes=8)  # fmt: skip
    head.train()
    maps = torch.rand(5, 4, 6, 6)
    prev = torch.randn(5, NUM_CLASSES) if cascade else None
    head(cache_form(head, maps), prev)  # moves BatchNorm statistics
    buffer = io.BytesIO()
    torch.save({"head_config": head.config, "state_dict": head.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    config = json.loads(json.dumps(saved["head_config"]))  # JSON-serialisable
    assert config["kind"] == kind
    rebuilt = build_head(config)
    rebuilt.load_state_dict(saved["state_dict"])
    assert type(rebuilt) is type(head) and rebuilt.config == head.config
    head.eval(), rebuilt.eval()
    for a, b in zip(head(cache_form(head, maps), prev), rebuilt(cache_form(rebuilt, maps), prev),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)


def test_registry_names_every_kind_and_its_cache_form():
    forms = {kind: head_form(kind) for kind in HEAD_KINDS}
    assert forms == {"basic": "proto", "augmented": "proto", "sdn": "pooled",
                     "pteenet_conv2": "map", "msdnet": "map", "ztw_cascading": "map"}  # fmt: skip
    with pytest.raises(CalexError, match="head kind 'mlp' is not one of basic, augmented, sdn"):
        head_form("mlp")
    with pytest.raises(CalexError, match="head kind 'mlp'"):
        build_head({"kind": "mlp", "d": 4, "num_classes": 3})


@pytest.mark.parametrize("kind", HEAD_KINDS)
@pytest.mark.parametrize("with_conf", [True, False])
def test_inference_form_on_the_raw_map_equals_the_head_on_the_cache(kind, with_conf):
    torch.manual_seed(4)
    cascade = NUM_CLASSES if kind in ("ztw_cascading", "augmented") else 0
    head = new_head(kind, d=8, h=8, w=8, num_classes=NUM_CLASSES, cascade_input_dim=cascade,
                    prototypes=16)  # fmt: skip
    head.train()
    for _ in range(3):  # non-trivial BatchNorm statistics
        head(cache_form(head, torch.rand(16, 8, 8, 8) * 2), None if not cascade else
             torch.randn(16, NUM_CLASSES))  # fmt: skip
    head.eval().requires_grad_(False)
    maps = torch.rand(12, 8, 8, 8).relu()
    prev = torch.randn(12, NUM_CLASSES) if cascade else None
    stored = {"proto": "gram", "pooled": "pooled", "map": "map"}[head_form(kind)]
    cls, conf = head(cache_form(head, maps), prev)  # what the sweep saw, from the cache
    form = inference_head(head, stored, with_conf).eval()
    assert isinstance(form, ExitHead if head_form(kind) == "proto" else MapExitHead)
    scripted = torch.jit.script(form)
    for module in (form, scripted):
        got_cls, got_conf = module(maps, prev)
        assert torch.equal(got_cls, cls)  # the same operations on the same batch
        assert torch.equal(got_conf, conf) if with_conf else got_conf.numel() == 0
    # survivors: a sub-batch gives the cache rows' outputs up to the rounding of matrix
    # products of another size (the pooled form itself is exact, as tested above)
    sub_cls, _ = scripted(maps[3:7], prev[3:7] if cascade else None)
    assert torch.allclose(sub_cls, cls[3:7], atol=1e-5)
    assert torch.equal(sub_cls.argmax(1), cls[3:7].argmax(1))


def test_inference_form_refuses_a_cache_it_cannot_stand_for():
    head = new_head("sdn", d=4, h=8, w=8, num_classes=NUM_CLASSES).eval()
    assert isinstance(inference_head(head, "map"), MapExitHead)  # head_input: map
    with pytest.raises(CalexError, match="'sdn' head cannot stand for a cache stored as 'gram'"):
        inference_head(head, "gram")
    conv = new_head("msdnet", d=4, h=8, w=8, num_classes=NUM_CLASSES).eval()
    with pytest.raises(CalexError, match="rerun cache_features"):
        inference_head(conv, "pooled")
