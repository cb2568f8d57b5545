"""Branch heads: Gram and map paths agree, shapes, cascade input, MACs of every kind."""

import numpy as np
import pytest
import torch
from torch import nn

from calex_steps.models.gram import pack_gram, unpack_gram
from calex_steps.models.heads import PrototypeHead, head_macs, new_head


def test_pack_gram_order_and_unpack_roundtrip():
    torch.manual_seed(0)
    maps = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    x = maps.reshape(3, 5, 24)
    full = torch.einsum("ndp,nep->nde", x, x) / 24  # mean over positions
    rows, cols = np.triu_indices(5)
    packed = pack_gram(maps)
    assert packed.shape == (3, 15)
    assert torch.allclose(packed, full[:, rows, cols])
    assert torch.allclose(unpack_gram(packed, 5), full)


def test_gram_path_equals_map_path():
    torch.manual_seed(1)
    head = PrototypeHead(d=8, num_classes=5, prototypes=16, kind="augmented").double()
    maps = torch.randn(7, 8, 5, 5, dtype=torch.float64).relu()
    m_map = head.responses_from_map(maps)
    m_gram = head.responses_from_gram(pack_gram(maps))
    assert m_map.shape == (7, 16)
    assert torch.allclose(m_map, m_gram, rtol=1e-10, atol=1e-12)
    # M_k = w_kᵀ G w_k written out for one sample and one prototype
    w = head.prototype_matrix[3]
    g = unpack_gram(pack_gram(maps[:1]), 8)[0]
    assert torch.isclose(m_map[0, 3], w @ g @ w)
    # forward dispatches on the input form and gives the same outputs
    head.eval()
    cls_a, conf_a = head(maps)
    cls_b, conf_b = head(pack_gram(maps))
    assert torch.allclose(cls_a, cls_b) and torch.allclose(conf_a, conf_b)


def test_wrong_input_shape_is_rejected():
    head = PrototypeHead(d=8, num_classes=5, prototypes=4)
    with pytest.raises(ValueError, match="N×36"):
        head(torch.zeros(2, 35))


def test_augmented_head_structure_and_shapes():
    head = PrototypeHead(d=6, num_classes=5, prototypes=16, kind="augmented")
    assert isinstance(head.norm, nn.LayerNorm) and head.norm.normalized_shape == (16,)
    kinds = [type(layer) for layer in head.mlp]
    assert kinds == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert (head.mlp[0].in_features, head.mlp[0].out_features) == (16, 32)
    assert (head.mlp[3].in_features, head.mlp[3].out_features) == (32, 16)
    assert head.mlp[2].p == 0.1
    assert head.proto.bias is None
    cls, conf = head(torch.randn(4, 6, 3, 3))
    assert cls.shape == (4, 5) and conf.shape == (4, 5)
    basic = PrototypeHead(d=6, num_classes=5, prototypes=16, kind="basic")
    assert not hasattr(basic, "mlp")
    m = torch.rand(4, 16)
    assert torch.equal(basic.represent(m), m)
    # stage-1 parameters exclude the conf layer
    names = {id(p) for p in head.classification_parameters()}
    assert all(id(p) not in names for p in head.conf.parameters())
    assert id(head.cls.weight) in names and id(head.proto.weight) in names


def test_cascade_input_is_detached_and_used():
    torch.manual_seed(2)
    head = PrototypeHead(d=4, num_classes=3, prototypes=8, kind="basic", cascade_input_dim=5)
    x = torch.randn(6, 4, 2, 2)
    prev = torch.randn(6, 5, requires_grad=True)
    rep = head.represent(head.responses(x), prev)
    assert rep.shape == (6, 13)
    # the appended part is the layer-normalised previous logits
    expected = (prev - prev.mean(1, keepdim=True)) / torch.sqrt(
        prev.var(1, unbiased=False, keepdim=True) + 1e-5
    )
    assert torch.allclose(rep[:, 8:], expected, atol=1e-5)
    cls, conf = head(x, prev)
    (cls.sum() + conf.sum()).backward()
    assert prev.grad is None
    assert head.proto.weight.grad is not None
    cls2, _ = head(x, prev.detach() * -1.0)
    assert not torch.allclose(cls, cls2)
    with pytest.raises(ValueError, match="cascade input"):
        head(x)


@pytest.mark.parametrize(
    ("kind", "cascade", "extra"),
    [("basic", 0, 0), ("augmented", 0, 64 * 128 + 128 * 64), ("basic", 7, 2 * 7 * 5)],
)
def test_head_macs_matches_hand_formula(kind, cascade, extra):
    k, d, h, w, n = 64, 8, 32, 32, 5
    head = PrototypeHead(d=d, num_classes=n, prototypes=k, kind=kind, cascade_input_dim=cascade)
    head.train()
    conv, square, out_layers = k * d * h * w, k * h * w, 2 * k * n
    assert head_macs(head, d, h, w) == conv + square + out_layers + extra
    assert head.training  # the helper restores the mode


@pytest.mark.parametrize(
    ("kind", "h", "cascade", "expected"),
    [
        # d=8 channels, N=5 classes; cls and conf are two Linear(R, 5)
        ("sdn", 6, 0, 2 * (8 * 4 * 4) * 5),  # pooled to 4×4: only the linear layers
        ("sdn", 3, 5, 2 * (8 * 3 * 3 + 5) * 5),  # a 3×3 map stays 3×3
        ("pteenet_conv2", 6, 0, 2 * (8 * 8 * 9 * 6 * 6) + 2 * 8 * 5),
        # stride 2, padding 1: 6×6 -> 3×3 -> 2×2, 128 channels each
        ("msdnet", 6, 0, 128 * 8 * 9 * 3 * 3 + 128 * 128 * 9 * 2 * 2 + 2 * 128 * 5),
        ("ztw_cascading", 6, 5, 8 * 8 * 9 * 6 * 6 + 2 * (8 * 4 * 4 + 5) * 5),
    ],
)
def test_head_macs_of_the_literature_heads_by_hand(kind, h, cascade, expected):
    head = new_head(kind, d=8, h=h, w=h, num_classes=5, cascade_input_dim=cascade)
    head.train()
    assert head_macs(head, 8, h, h) == expected
    assert head.training
