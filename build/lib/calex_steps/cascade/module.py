"""The trained cascade as one ``nn.Module`` that stops computing for a sample once it exits
(SPEC section 11).

The frozen backbone is cut into L+1 sequential segments, the first L ending at
the attach points, the last one running the remaining blocks, the average pool
and the task classifier (probe or the backbone's own). Supported structures:

- calex's CIFAR ResNets (``backbones.CifarResNet``): stem = conv1, bn1, ReLU;
  then every block of ``layer1..layerS`` in order; then ``avgpool`` and the classifier;
- torchvision ResNets: stem = conv1, bn1, relu, maxpool; then ``layer1..layer4``.

An attach point is a stage (``layer3``: after its last block) or one block of
a stage (``layer3.4``: after block 4). Any other model or name is a CalexError.

Each branch head computes its prototype responses M the way the feature cache
stored that attach point (packed Gram or raw map; the two agree up to float
rounding): the thresholds were calibrated on confidences computed from the
cache, so the module reproduces the simulated cascade bit for bit.
Everything here is TorchScript-compatible (``export_cascade`` scripts it).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.errors import CalexError
from calex_steps.models.backbones import CifarResNet
from calex_steps.models.heads import PrototypeHead

SIGNALS = ("branch", "boost")  # exit signal: the head's own (cls, conf), or BoostNet's F_l


def backbone_units(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Module]:
    """The backbone as (name, module) units run in order, and its average pool.

    Units: ``("stem", ...)`` then ``("layerK.i", block)`` for every block of every
    stage. See the module docstring for the supported structures.
    """
    if isinstance(model, CifarResNet):
        stem = nn.Sequential(model.conv1, model.bn1, nn.ReLU())
        stages = list(model.stage_names)
    else:
        import torchvision

        if not isinstance(model, torchvision.models.ResNet):
            raise CalexError(
                f"the cascade module cannot split a {type(model).__name__}; it supports calex's "
                "CIFAR ResNets and torchvision ResNets (stem, layer1..layerS, avgpool, classifier)"
            )
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        stages = ["layer1", "layer2", "layer3", "layer4"]
    units: list[tuple[str, nn.Module]] = [("stem", stem)]
    for stage in stages:
        units += [(f"{stage}.{i}", block) for i, block in enumerate(getattr(model, stage))]
    return units, model.avgpool


def attach_unit_index(units: list[tuple[str, nn.Module]], name: str) -> int:
    """Index in ``units`` of the unit an attach point ends at (``layerK`` = its last block)."""
    names = [n for n, _ in units]
    if name in names[1:]:
        return names.index(name)
    blocks = [i for i, n in enumerate(names) if n.split(".")[0] == name]
    if blocks and name != "stem":
        return blocks[-1]
    stages = sorted({n.split(".")[0] for n in names[1:]})
    raise CalexError(
        f"attach point '{name}' is not a stage or block of the backbone; use one of "
        f"{', '.join(stages)} or a block such as {names[-1]}"
    )


class Tail(nn.Module):
    """The last segment: remaining blocks, average pool, flatten, task classifier."""

    def __init__(self, blocks: nn.Sequential, pool: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.blocks, self.pool, self.classifier = blocks, pool, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×d×H×W -> N×C logits."""
        return self.classifier(self.pool(self.blocks(x)).flatten(1))


class ExitHead(nn.Module):
    """A trained ``PrototypeHead`` in inference form, M from the map or the packed Gram.

    The Gram path runs the same operations as ``features.pack_gram`` followed
    by ``PrototypeHead.responses_from_gram``, with the K×P coefficients precomputed.
    """

    def __init__(self, head: PrototypeHead, use_gram: bool) -> None:
        super().__init__()
        cfg = head.config
        self.use_gram = use_gram
        self.cascade_dim = int(cfg["cascade_input_dim"])
        self.proto = head.proto
        augmented = cfg["kind"] == "augmented"
        self.norm = head.norm if augmented else nn.Identity()
        self.mlp = head.mlp if augmented else nn.Identity()
        self.cls, self.conf = head.cls, head.conf
        rows, cols = torch.triu_indices(cfg["d"], cfg["d"])
        with torch.no_grad():  # identical to responses_from_gram's coefficients
            w = head.prototype_matrix  # K×d
            coef = w[:, rows] * w[:, cols]  # K×P
            coef = torch.where(rows != cols, 2.0 * coef, coef)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("coef", coef.detach().clone())

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """M (N×K) from a feature map N×d×H×W."""
        if not self.use_gram:
            return self.proto(x).square().mean(dim=(2, 3))
        n, d, h, w = x.shape
        flat = x.reshape(n, d, h * w)  # N×d×P
        gram = torch.bmm(flat, flat.transpose(1, 2)) / (h * w)  # N×d×d
        return gram[:, self.rows, self.cols] @ self.coef.t()  # N×K

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls logits N×C, conf logits N×C) from a map; ``prev`` = previous logits (ZTW input)."""
        rep = self.mlp(self.norm(self.responses(x)))
        if self.cascade_dim > 0:
            assert prev is not None
            rep = torch.cat([rep, F.layer_norm(prev, [prev.shape[1]])], dim=1)
        return self.cls(rep), self.conf(rep)


class CascadeModel(nn.Module):
    """Backbone segments, exit heads, thresholds of one operating point, in one module.

    ``forward(images)`` takes uint8 N×H×W×3 RGB (normalised inside) or float
    N×3×H×W already normalised, and returns (pred N, exit_branch N with
    0..L-1 = branch and L = backbone, confidence N: the branch's sigmoid
    confidence at its prediction, or the classifier's softmax probability).
    Only the samples still in the cascade run the next segment.
    """

    def __init__(self, segments: list[nn.Module], heads: list[ExitHead], tail: Tail,
                 thresholds: torch.Tensor, mean: list[float], std: list[float],
                 class_names: list[str], signal: str = "branch", boost_r: float = 0.0,
                 meta: dict | None = None) -> None:  # fmt: skip
        super().__init__()
        if len(segments) != len(heads) or thresholds.shape[0] != len(heads):
            raise CalexError(
                f"got {len(segments)} segments, {len(heads)} heads and {thresholds.shape[0]} "
                "threshold rows; need one of each per branch"
            )
        if signal not in SIGNALS:
            raise CalexError(f"exit signal '{signal}' is not one of {list(SIGNALS)}")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.tail = tail
        self.register_buffer("thresholds", thresholds.to(torch.float64))  # L×C
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.class_names = list(class_names)
        self.num_branches = len(heads)
        self.boost = signal == "boost"
        self.boost_r = float(boost_r)
        self.meta_json = json.dumps(meta or {}, sort_keys=True)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×H×W×3 -> normalised float N×3×H×W (as ``backbones.preprocess``); float passes."""
        if images.dtype == torch.uint8:
            x = images.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
            return ((x - self.mean) / self.std).contiguous()
        return images

    def backbone_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The plain backbone with its classifier on every sample: N×C logits."""
        x = self.prepare(images)
        for segment in self.segments:
            x = segment(x)
        return self.tail(x)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pred, exit_branch, confidence), each of length N; see the class docstring."""
        x = self.prepare(images)
        n = x.shape[0]
        device = x.device
        pred = torch.zeros(n, dtype=torch.long, device=device)
        exit_branch = torch.full((n,), self.num_branches, dtype=torch.long, device=device)
        confidence = torch.zeros(n, dtype=torch.float32, device=device)
        alive = torch.arange(n, device=device)  # original index of each survivor
        prev = torch.zeros(0, device=device)  # previous branch's logits of the survivors
        has_prev = False
        for b, (segment, head) in enumerate(zip(self.segments, self.heads)):  # noqa: B905
            x = segment(x)
            cls_logits, conf_logits = head(x, prev if has_prev else None)
            if self.boost and has_prev:
                cls_logits = cls_logits + self.boost_r * prev  # F_l = f_l + r·F_{l-1}
            p = cls_logits.argmax(dim=1)  # N_l
            c = torch.sigmoid(conf_logits).gather(1, p.unsqueeze(1)).squeeze(1)  # N_l
            released = c.to(torch.float64) > self.thresholds[b].index_select(0, p)
            out = released.nonzero().squeeze(1)
            ids = alive.index_select(0, out)
            pred.index_copy_(0, ids, p.index_select(0, out))
            confidence.index_copy_(0, ids, c.index_select(0, out))
            exit_branch.index_fill_(0, ids, b)
            stay = (~released).nonzero().squeeze(1)
            alive = alive.index_select(0, stay)
            if alive.numel() == 0:
                return pred, exit_branch, confidence
            x = x.index_select(0, stay)
            prev = cls_logits.index_select(0, stay)
            has_prev = True
        probs = torch.softmax(self.tail(x), dim=1)  # survivors × C
        top, p = probs.max(dim=1)
        pred.index_copy_(0, alive, p)
        confidence.index_copy_(0, alive, top)
        return pred, exit_branch, confidence


def split_backbone(model: nn.Module, classifier: nn.Linear,
                   attach_points: list[str]) -> tuple[list[nn.Module], Tail]:  # fmt: skip
    """The L segments ending at the attach points (in forward order) and the tail."""
    units, pool = backbone_units(model)
    ends = [attach_unit_index(units, a) for a in attach_points]
    if any(b <= a for a, b in zip(ends, ends[1:], strict=False)):
        raise CalexError(f"attach points {attach_points} are not in forward order; reorder them")
    segments, start = [], 0
    for end in ends:
        segments.append(nn.Sequential(*[m for _, m in units[start : end + 1]]))
        start = end + 1
    tail = Tail(nn.Sequential(*[m for _, m in units[start:]]), pool, classifier)
    return segments, tail
