"""The early-exit literature's branch heads, rebuilt on calex's head interface.

Four kinds beside the paper's prototype heads (each class's docstring says what it
copies from its publication and what differs):

- ``sdn``: Shallow-Deep Networks' internal classifier on the pooled cache form;
- ``pteenet_conv2``: PTEEnet's ``conv2`` exit block;
- ``msdnet``: the CIFAR classifier of MSDNet (also BoostNet's);
- ``ztw_cascading``: Zero-Time-Waste's cascading head.

Every head has the interface of ``PrototypeHead``: ``config`` (constructor
kwargs with ``kind``), ``responses`` on the head's cache form, ``represent``
(with the previous branch's detached, layer-normalised logits appended when
``cascade_input_dim > 0``), two independent output layers ``cls`` and ``conf``
(the per-class confidence layer is calex's, so every recipe runs on every head),
``outputs``, ``forward`` and ``classification_parameters``. ``features`` maps the
head's cache form to the N×F feature vector; ``cache_input`` turns a raw map
into the cache form, so that the inference form (``cascade/exit_heads.py``) runs
``features`` on ``cache_input(map)`` with the very operations the cache path runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL_SIZE = 4
"""SDN pools every map to at most 4×4 positions."""

CONV_KINDS = ("pteenet_conv2", "msdnet", "ztw_cascading")
"""Head kinds whose cache form is the raw map."""


def pooled_grid(h: int, w: int) -> tuple[int, int]:
    """The pooled grid s_h×s_w of an H×W map: min(4, H)×min(4, W) (``POOL_SIZE``)."""
    return min(4, h), min(4, w)  # a literal: TorchScript compiles this function


def pooled_features(fmap: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> N×2×C×s_h×s_w: [adaptive max pool, adaptive average pool].

    The one definition of the ``pooled`` cache form: the cache writer stores it and
    the inference heads compute it, so both hold the same numbers.
    """
    grid = pooled_grid(int(fmap.shape[2]), int(fmap.shape[3]))
    x = fmap.contiguous()  # the same kernels whatever the caller's memory format
    return torch.stack([F.adaptive_max_pool2d(x, grid), F.adaptive_avg_pool2d(x, grid)], dim=1)


def mix_pooled(pooled: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """SDN's mixed pooling on the pooled form, flattened: alpha·max + (1 − alpha)·avg."""
    mixed = alpha * pooled[:, 0] + (1 - alpha) * pooled[:, 1]
    return mixed.flatten(1)


class PooledFeatures(nn.Module):
    """``pooled_features`` as a module (a step of a head's raw-map path)."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return pooled_features(fmap)


class MixedPool(nn.Module):
    """SDN's learned mix of the pooled form: ONE scalar alpha, drawn from U[0, 1) as the SDN
    code draws it, not constrained to [0, 1] (neither is it there)."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return mix_pooled(pooled, self.alpha)


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """3×3 conv (padding 1, no bias, He-normal fan-out weights), BatchNorm, ReLU."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


class HeadOutputs(nn.Module):
    """What every head kind shares after its own features: the optional cascade input, the
    two output layers ``cls`` and ``conf``, ``forward`` and the stage-1 parameters."""

    config: dict

    def with_cascade_input(self, rep: torch.Tensor, prev_logits: torch.Tensor | None):
        """``rep``, with the previous logits detached and layer-normalised appended when the
        head has a cascade input (``config["cascade_input_dim"] > 0``)."""
        if self.config["cascade_input_dim"] > 0:
            if prev_logits is None:
                raise ValueError("this head has a cascade input: pass the previous logits")
            prev = F.layer_norm(prev_logits.detach(), prev_logits.shape[-1:])
            return torch.cat([rep, prev], dim=1)
        return rep

    def outputs(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls_logits N×C, conf_logits N×C pre-sigmoid) from a representation."""
        return self.cls(rep), self.conf(rep)

    def forward(
        self, x: torch.Tensor, prev_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls_logits, conf_logits) from the head's cache form."""
        return self.outputs(self.represent(self.responses(x), prev_logits))

    def classification_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 1: everything but the conf layer."""
        return [p for name, p in self.named_parameters() if not name.startswith("conf.")]


class LiteratureHead(HeadOutputs):
    """What every head here shares: the cascade input, ``cls`` and ``conf``, the interface.

    A subclass builds ``self.features`` (cache form -> N×F) and calls ``finish(F)``.
    """

    kind = ""

    def __init__(self, config: dict) -> None:
        super().__init__()
        if config["kind"] != self.kind:
            raise ValueError(
                f"a {type(self).__name__} has kind '{self.kind}', not {config['kind']}"
            )
        self.config = dict(config)
        self.features: nn.Module = nn.Identity()

    def finish(self, feature_dim: int) -> None:
        """The two output layers over the features and the cascade input."""
        rep_dim = feature_dim + int(self.config["cascade_input_dim"])
        self.cls = nn.Linear(rep_dim, int(self.config["num_classes"]))
        self.conf = nn.Linear(rep_dim, int(self.config["num_classes"]))

    def cache_input(self, fmap: torch.Tensor) -> torch.Tensor:
        """The head's cache form of raw maps (the map itself for the convolutional heads)."""
        return fmap

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """The N×F feature vector from the cache form."""
        return self.features(x)

    def represent(self, m: torch.Tensor, prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """N×F, or N×(F + C_prev) with the previous logits detached and layer-normalised."""
        return self.with_cascade_input(m, prev_logits)


class SdnHead(LiteratureHead):
    """Shallow-Deep Networks' internal classifier (Kaya et al., ICML 2019).

    As published: mixed pooling alpha·maxpool + (1 − alpha)·avgpool to 4×4 with ONE learned
    scalar alpha (initialised U[0, 1), unconstrained), flatten, one linear classifier with
    PyTorch's default initialisation. Differs: the pooling is adaptive to
    min(4, H)×min(4, W) (the SDN code uses a fixed kernel H/4, the same on maps divisible
    by 4, and no pooling below 4×4, which adaptive pooling to H×W equals); it reads the
    block's output after its ReLU (SDN taps before it); calex adds the per-class ``conf``
    layer and the optional cascade input. Its cache form is ``pooled_features``.
    """

    kind = "sdn"

    def __init__(
        self, d: int, h: int, w: int, num_classes: int, cascade_input_dim: int = 0,
        kind: str = "sdn",
    ) -> None:  # fmt: skip
        super().__init__({"kind": kind, "d": d, "h": h, "w": w, "num_classes": num_classes,
                          "cascade_input_dim": cascade_input_dim})  # fmt: skip
        self.features = MixedPool()
        s_h, s_w = pooled_grid(h, w)
        self.finish(d * s_h * s_w)

    def cache_input(self, fmap: torch.Tensor) -> torch.Tensor:
        return pooled_features(fmap)


class PteenetConv2Head(LiteratureHead):
    """PTEEnet's ``conv2`` exit block (Lahiany & Aperstein, 2022).

    As published: 2 × [3×3 conv d→d (padding 1, no bias, He-normal fan-out), BatchNorm,
    ReLU], global average pool, a linear classifier. Differs: its confidence is one sigmoid
    unit (Linear(d, 1)); calex's ``conf`` is per class (Linear(d, C)), and the softmax its
    classifier ends in is left to the loss.
    """

    kind = "pteenet_conv2"

    def __init__(
        self, d: int, num_classes: int, cascade_input_dim: int = 0, kind: str = "pteenet_conv2"
    ) -> None:
        super().__init__({"kind": kind, "d": d, "num_classes": num_classes,
                          "cascade_input_dim": cascade_input_dim})  # fmt: skip
        self.features = nn.Sequential(
            *conv_bn_relu(d, d, 1), *conv_bn_relu(d, d, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.finish(d)


class MsdnetHead(LiteratureHead):
    """MSDNet's CIFAR classifier (Huang et al., ICLR 2018), also BoostNet's.

    As published: 2 × [3×3 conv stride 2 (padding 1, no bias, normal(0, √(2/(9·out)))
    weights), BatchNorm, ReLU] with 128 channels each, average pool, a linear classifier
    with zero bias. Differs: the pool is global (MSDNet's fixed 2×2 pool is global on the
    2×2 maps its 8×8 coarsest scale leaves; calex attaches it to maps of any size); calex
    adds ``conf`` and the optional cascade input.
    """

    kind = "msdnet"

    def __init__(
        self, d: int, num_classes: int, cascade_input_dim: int = 0, inter_channels: int = 128,
        kind: str = "msdnet",
    ) -> None:  # fmt: skip
        super().__init__({"kind": kind, "d": d, "num_classes": num_classes,
                          "cascade_input_dim": cascade_input_dim,
                          "inter_channels": inter_channels})  # fmt: skip
        c = inter_channels
        self.features = nn.Sequential(
            *conv_bn_relu(d, c, 2), *conv_bn_relu(c, c, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.finish(c)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.conf.bias)


class ZtwCascadingHead(LiteratureHead):
    """Zero-Time-Waste's cascading head (Wołczyk et al., NeurIPS 2021), CIFAR variant.

    As published: 3×3 conv d→d (stride 1, padding 1, with bias, He-normal fan-out), ReLU,
    SDN's mixed pooling to 4×4, a linear layer over the pooled features concatenated with
    the previous head's detached logits (from the second head on: ``cascade_input_dim``).
    Differs: the previous logits are layer-normalised without affine parameters (as
    calex's other cascade inputs; the ZTW code's CIFAR runs do not normalise them, its
    later code uses an affine LayerNorm); it reads the block's output after its ReLU;
    calex adds ``conf``. Its cache form is the raw map; the pooling runs
    ``pooled_features``, so the pooled numbers are those of the ``sdn`` cache form.
    """

    kind = "ztw_cascading"

    def __init__(
        self, d: int, h: int, w: int, num_classes: int, cascade_input_dim: int = 0,
        kind: str = "ztw_cascading",
    ) -> None:  # fmt: skip
        super().__init__({"kind": kind, "d": d, "h": h, "w": w, "num_classes": num_classes,
                          "cascade_input_dim": cascade_input_dim})  # fmt: skip
        conv = nn.Conv2d(d, d, kernel_size=3, padding=1, bias=True)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.features = nn.Sequential(conv, nn.ReLU(), PooledFeatures(), MixedPool())
        s_h, s_w = pooled_grid(h, w)
        self.finish(d * s_h * s_w)


LITERATURE_HEADS: dict[str, type[LiteratureHead]] = {
    cls.kind: cls for cls in (SdnHead, PteenetConv2Head, MsdnetHead, ZtwCascadingHead)
}
