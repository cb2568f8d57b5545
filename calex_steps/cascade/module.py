"""The trained cascade as one ``nn.Module`` that stops computing for a sample once it exits
(docs/deploy.md).

The frozen backbone is cut into L+1 sequential segments, the first L ending at
the attach points, the last one running the remaining blocks, the average pool
and the task classifier (probe or the backbone's own). Supported structures:

- calex's CIFAR ResNets (``backbones.CifarResNet``): stem = conv1, bn1, ReLU;
  then every block of ``layer1..layerS`` in order; then ``avgpool`` and the classifier;
- torchvision ResNets: stem = conv1, bn1, relu, maxpool; then ``layer1..layer4``.

An attach point is a stage (``layer3``: after its last block) or one block of
a stage (``layer3.4``: after block 4). Any other model or name is a CalexError.

Each branch head runs in its inference form (``cascade/exit_heads.py``), computing
from the raw map what the feature cache stored for that attach point (packed
Gram, raw map or pooled form): the thresholds were calibrated on confidences
computed from the cache, so the module reproduces the simulated cascade bit for
bit. Every exit signal of ``cascade.signals`` is computed here with the same
definitions, in torch (``exit_signal``). Everything is TorchScript-compatible.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calex_steps.cascade.exit_heads import ExitHead
from calex_steps.cascade.signals import SIGNALS
from calex_steps.errors import CalexError
from calex_steps.models.backbones import CifarResNet

SIGNAL_CODES = {"branch": 0, "ztw_ensemble": 1, "max_softmax": 2, "entropy": 3, "top2_gap": 4,
                "patience": 5}  # fmt: skip
"""Exit signal -> the integer ``exit_signal`` branches on (literals there: TorchScript)."""
assert set(SIGNAL_CODES) == set(SIGNALS), "a new exit signal needs its code in the module"


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


def exit_signal(kind: int, cls_logits: torch.Tensor, conf_logits: torch.Tensor,
                temperature: float, ens_a: torch.Tensor, ens_b: torch.Tensor,
                members: torch.Tensor, run: torch.Tensor,
                prev_pred: torch.Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(prediction N, signal N as float64, members) of one branch, as ``cascade.signals``.

    ``members`` (l-1, N, C) holds the earlier branches' log-softmax of the survivors
    (ZTW; returned with this branch's appended), ``run`` and ``prev_pred`` the
    patience run length and prediction of the previous branch (empty at branch 1).
    """
    if kind == 0:  # branch
        pred = cls_logits.argmax(dim=1)
        conf = torch.sigmoid(conf_logits).gather(1, pred.unsqueeze(1)).squeeze(1)
        return pred, conf.to(torch.float64), members
    if kind == 1:  # ztw_ensemble: training.ztw.ensemble_outputs on the survivors
        logp = F.log_softmax(cls_logits, dim=1).unsqueeze(0)
        members = logp if members.numel() == 0 else torch.cat([members, logp], dim=0)
        ens = (ens_a.exp()[:, None, None] * members).sum(dim=0) / members.shape[0] + ens_b
        conf, pred = F.log_softmax(ens, dim=1).exp().max(dim=1)
        return pred, conf.to(torch.float64), members
    pred = cls_logits.argmax(dim=1)
    if kind == 5:  # patience
        if prev_pred.numel() == 0:
            return pred, torch.ones(pred.shape[0], dtype=torch.float64), members
        return pred, torch.where(pred == prev_pred, run + 1.0, torch.ones_like(run)), members
    logp = F.log_softmax(cls_logits.to(torch.float64) / temperature, dim=1)
    if kind == 2:  # max_softmax
        return pred, logp.max(dim=1)[0].exp(), members
    if kind == 3:  # entropy
        entropy = -(logp.exp() * logp).sum(dim=1)
        return pred, 1.0 - entropy / math.log(logp.shape[1]), members
    two = logp.exp().topk(2, dim=1)[0]  # kind 4: top2_gap
    return pred, two[:, 0] - two[:, 1], members


class CascadeModel(nn.Module):
    """Backbone segments, exit heads, thresholds of one operating point, in one module.

    ``forward(images)`` takes uint8 N×H×W×3 RGB (normalised inside) or float
    N×3×H×W already normalised, and returns (pred N, exit_branch N with
    0..L-1 = branch and L = backbone, confidence N: the exit signal at the
    prediction as float32, or the classifier's softmax probability). Only the
    samples still in the cascade run the next segment; a batch of one takes a
    path without any gathering.
    """

    def __init__(self, segments: list[nn.Module], heads: list[ExitHead], tail: Tail,
                 thresholds: torch.Tensor, mean: list[float], std: list[float],
                 class_names: list[str], signal: str = "branch", boost_r: float = 0.0,
                 meta: dict | None = None, temperatures: list[float] | None = None,
                 ensembles: list[tuple[list[float], list[float]]] | None = None,
                 channels_last: bool = False) -> None:  # fmt: skip
        super().__init__()
        count = len(heads)
        if len(segments) != count or thresholds.shape[0] != count:
            raise CalexError(
                f"got {len(segments)} segments, {count} heads and {thresholds.shape[0]} "
                "threshold rows; need one of each per branch"
            )
        if signal not in SIGNAL_CODES:
            raise CalexError(f"exit signal '{signal}' is not one of {list(SIGNAL_CODES)}")
        if signal == "ztw_ensemble" and (ensembles is None or len(ensembles) != count):
            raise CalexError("exit signal ztw_ensemble needs one (a, b) ensemble per branch")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.tail = tail
        num_classes = int(thresholds.shape[1])
        self.register_buffer("thresholds", thresholds.to(torch.float64))  # L×C
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        ens_a = torch.zeros(count, count)  # row l: a of exit l+1 (first l+1 entries)
        ens_b = torch.zeros(count, num_classes)
        for b, (a_l, b_l) in enumerate(ensembles or []):
            ens_a[b, : len(a_l)] = torch.tensor(a_l, dtype=torch.float32)
            ens_b[b] = torch.tensor(b_l, dtype=torch.float32)
        self.register_buffer("ens_a", ens_a)
        self.register_buffer("ens_b", ens_b)
        self.temperatures = [float(t) for t in (temperatures or [1.0] * count)]
        self.class_names = list(class_names)
        self.num_branches = count
        self.signal = SIGNAL_CODES[signal]
        self.boost = boost_r > 0
        self.boost_r = float(boost_r)
        self.channels_last = bool(channels_last)
        self.meta_json = json.dumps(meta or {}, sort_keys=True)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×H×W×3 -> normalised float N×3×H×W (as ``backbones.preprocess``); float passes."""
        if images.dtype == torch.uint8:
            x = images.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
            x = (x - self.mean) / self.std
        else:
            x = images
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    @torch.jit.export
    def backbone_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The plain backbone with its classifier on every sample: N×C logits."""
        x = self.prepare(images)
        for segment in self.segments:
            x = segment(x)
        return self.tail(x)

    def decide(self, b: int, cls_logits: torch.Tensor, conf_logits: torch.Tensor,
               members: torch.Tensor, run: torch.Tensor,
               prev_pred: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        """(pred, signal, released, members) of branch ``b`` for its samples."""
        pred, signal, members = exit_signal(
            self.signal,
            cls_logits,
            conf_logits,
            self.temperatures[b],
            self.ens_a[b, : b + 1],
            self.ens_b[b],
            members,
            run,
            prev_pred,
        )
        released = signal > self.thresholds[b].index_select(0, pred)
        return pred, signal, released, members

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pred, exit_branch, confidence), each of length N; see the class docstring."""
        x = self.prepare(images)
        if x.shape[0] == 1:
            return self.forward_one(x)
        n = x.shape[0]
        device = x.device
        pred = torch.zeros(n, dtype=torch.long, device=device)
        exit_branch = torch.full((n,), self.num_branches, dtype=torch.long, device=device)
        confidence = torch.zeros(n, dtype=torch.float32, device=device)
        alive = torch.arange(n, device=device)  # original index of each survivor
        prev = torch.zeros(0, device=device)  # previous branch's logits of the survivors
        members = torch.zeros(0, device=device)  # ZTW: earlier log-softmax of the survivors
        run = torch.zeros(0, dtype=torch.float64, device=device)  # patience run lengths
        prev_pred = torch.zeros(0, dtype=torch.long, device=device)
        for b, (segment, head) in enumerate(zip(self.segments, self.heads)):  # noqa: B905
            x = segment(x)
            cls_logits, conf_logits = head(x, prev if b > 0 else None)
            if self.boost and b > 0:
                cls_logits = cls_logits + self.boost_r * prev  # F_l = f_l + r·F_{l-1}
            p, s, released, members = self.decide(b, cls_logits, conf_logits, members, run,
                                                  prev_pred)  # fmt: skip
            out = released.nonzero().squeeze(1)
            ids = alive.index_select(0, out)
            pred.index_copy_(0, ids, p.index_select(0, out))
            confidence.index_copy_(0, ids, s.index_select(0, out).to(torch.float32))
            exit_branch.index_fill_(0, ids, b)
            stay = (~released).nonzero().squeeze(1)
            alive = alive.index_select(0, stay)
            if alive.numel() == 0:
                return pred, exit_branch, confidence
            if out.numel() > 0:  # nobody left this branch: no gather
                x = x.index_select(0, stay)
                cls_logits, p, s = (cls_logits.index_select(0, stay), p.index_select(0, stay),
                                    s.index_select(0, stay))  # fmt: skip
                if members.numel() > 0:
                    members = members.index_select(1, stay)
            prev, prev_pred, run = cls_logits, p, s
        probs = torch.softmax(self.tail(x), dim=1)  # survivors × C
        top, p = probs.max(dim=1)
        pred.index_copy_(0, alive, p)
        confidence.index_copy_(0, alive, top)
        return pred, exit_branch, confidence

    def forward_one(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cascade on a batch of one: stops at the first releasing branch, no gathers."""
        prev = torch.zeros(0, device=x.device)
        members = torch.zeros(0, device=x.device)
        run = torch.zeros(0, dtype=torch.float64, device=x.device)
        prev_pred = torch.zeros(0, dtype=torch.long, device=x.device)
        for b, (segment, head) in enumerate(zip(self.segments, self.heads)):  # noqa: B905
            x = segment(x)
            cls_logits, conf_logits = head(x, prev if b > 0 else None)
            if self.boost and b > 0:
                cls_logits = cls_logits + self.boost_r * prev
            p, s, released, members = self.decide(b, cls_logits, conf_logits, members, run,
                                                  prev_pred)  # fmt: skip
            if bool(released[0]):
                return p, torch.full_like(p, b), s.to(torch.float32)
            prev, prev_pred, run = cls_logits, p, s
        top, p = torch.softmax(self.tail(x), dim=1).max(dim=1)
        return p, torch.full_like(p, self.num_branches), top


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
