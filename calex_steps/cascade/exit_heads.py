"""The branch heads in inference form: what the deployable cascade runs on an attach point's
raw map (docs/deploy.md).

Every form has ``forward(x, prev) -> (cls logits, conf logits or an empty tensor)`` on the
RAW N×d×H×W map, is TorchScript-compatible, and runs the operations the training head
ran on the cache: the prototype head from the packed Gram or the map (as the cache
stored it), the ``sdn`` head from ``models.exit_heads.pooled_features`` of the map, the
convolutional heads on the map itself. The thresholds were calibrated on outputs
computed from the cache, so the cascade reproduces the simulated one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.errors import CalexError
from calex_steps.models.exit_heads import LiteratureHead, PooledFeatures
from calex_steps.models.heads import PrototypeHead, head_form

READABLE = {"proto": ("gram", "map"), "pooled": ("pooled", "map"), "map": ("map",)}
"""Head form -> the stored forms its inference form can stand for (``map``: computed from
the raw map, as ``build_cascade(head_input="map")`` asks)."""


class InferenceOutputs(nn.Module):
    """The output layers of an inference form, after its representation: the previous
    logits appended with a cascade input, ``cls``, and ``conf`` unless dropped."""

    def __init__(self, cascade_dim: int, with_conf: bool, cls: nn.Linear, conf: nn.Linear):
        super().__init__()
        self.cascade_dim = int(cascade_dim)
        self.with_conf = with_conf
        self.cls, self.conf = cls, conf

    def forward(
        self, rep: torch.Tensor, prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls logits N×C, conf logits N×C or empty) from a representation."""
        if self.cascade_dim > 0:
            assert prev is not None
            rep = torch.cat([rep, F.layer_norm(prev, [prev.shape[1]])], dim=1)
        if self.with_conf:
            return self.cls(rep), self.conf(rep)
        return self.cls(rep), torch.zeros(0, device=rep.device)


class ExitHead(nn.Module):
    """A trained ``PrototypeHead`` in inference form, M from the map or the packed Gram.

    The Gram path runs the same operations as ``features.pack_gram`` followed
    by ``PrototypeHead.responses_from_gram``, with the K×P coefficients precomputed.
    ``with_conf=False`` drops the confidence layer (signals computed from the class
    logits never read it).
    """

    def __init__(self, head: PrototypeHead, use_gram: bool, with_conf: bool = True) -> None:
        super().__init__()
        cfg = head.config
        self.use_gram = use_gram
        self.proto = head.proto
        augmented = cfg["kind"] == "augmented"
        self.norm = head.norm if augmented else nn.Identity()
        self.mlp = head.mlp if augmented else nn.Identity()
        self.out = InferenceOutputs(cfg["cascade_input_dim"], with_conf, head.cls, head.conf)
        d = int(cfg["d"])
        rows, cols = torch.triu_indices(d, d)
        with torch.no_grad():  # identical to responses_from_gram's coefficients
            w = head.prototype_matrix  # K×d
            coef = w[:, rows] * w[:, cols]  # K×P
            coef = torch.where(rows != cols, 2.0 * coef, coef)
        self.register_buffer("packed", rows * d + cols)  # P positions in a flattened d×d
        self.register_buffer("coef_t", coef.t().contiguous())  # P×K

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """M (N×K) from a feature map N×d×H×W."""
        if not self.use_gram:
            return self.proto(x).square().mean(dim=(2, 3))
        n, d, h, w = x.shape
        flat = x.reshape(n, d, h * w)  # N×d×P
        gram = torch.bmm(flat, flat.transpose(1, 2)) / (h * w)  # N×d×d
        return gram.reshape(n, d * d).index_select(1, self.packed) @ self.coef_t  # N×K

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls logits N×C, conf logits N×C or empty) from a map; ``prev`` = the previous
        branch's class logits (the input of a ZTW head)."""
        return self.out(self.mlp(self.norm(self.responses(x))), prev)


class MapExitHead(nn.Module):
    """A trained literature head (``models.exit_heads``) in inference form.

    ``body`` maps the raw map to the head's features: the head's own ``features``,
    preceded by ``pooled_features`` when the head reads the pooled cache form.
    """

    def __init__(self, head: LiteratureHead, with_conf: bool = True) -> None:
        super().__init__()
        steps = [PooledFeatures()] if head_form(head.config["kind"]) == "pooled" else []
        self.body = nn.Sequential(*steps, head.features)
        cascade_dim = head.config["cascade_input_dim"]
        self.out = InferenceOutputs(cascade_dim, with_conf, head.cls, head.conf)

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls logits N×C, conf logits N×C or empty) from a raw map and the previous
        branch's class logits (read only with a cascade input)."""
        return self.out(self.body(x), prev)


def inference_head(head: nn.Module, stored_kind: str, with_conf: bool = True) -> nn.Module:
    """The inference form of a trained head (put it in eval mode first).

    Args:
        head: a ``PrototypeHead`` or a ``models.exit_heads`` head.
        stored_kind: how the feature cache stored this attach point (``gram``, ``map``,
            ``pooled``; ``map`` also stands for "compute from the raw map").
        with_conf: keep the confidence layer (only the branch-confidence signal reads it).
    """
    form = head_form(head.config["kind"])
    if stored_kind not in READABLE[form]:
        raise CalexError(
            f"a '{head.config['kind']}' head cannot stand for a cache stored as "
            f"'{stored_kind}'; rerun cache_features for this head kind"
        )
    if isinstance(head, PrototypeHead):
        return ExitHead(head, stored_kind == "gram", with_conf)
    return MapExitHead(head, with_conf)
