"""Branch heads: the prototype heads (docs/method.md#heads), the registry of every head
kind, and their inference MACs (docs/method.md#flops).

The other kinds (the early-exit literature's heads) live in
:mod:`calex_steps.models.exit_heads`; ``build_head`` rebuilds any kind from its saved
``config`` and ``head_form`` names the cache form each kind reads.

A head sees a feature map X (d×H×W) only through the prototype responses
M_k = mean_{u,v} (w_k · x_uv)² = w_kᵀ G w_k, G = mean_{u,v} x_uv x_uvᵀ, so it
accepts either the raw map (N×d×H×W) or the packed Gram form (N×d(d+1)/2,
see :func:`calex_steps.models.gram.pack_gram`); both give the same M. No input
scaling is applied: backbone stage outputs are BatchNorm+ReLU activations of
order one, so M is of order one with the default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from calex_steps.data.feature_cache import HEAD_FORMS, packed_size
from calex_steps.errors import CalexError
from calex_steps.models.exit_heads import LITERATURE_HEADS, HeadOutputs, LiteratureHead
from calex_steps.models.flops import count_macs

PROTOTYPE_KINDS = ("basic", "augmented")
HEAD_KINDS = (*PROTOTYPE_KINDS, *LITERATURE_HEADS)
"""Every head kind a recipe's ``head:`` can name."""


class PrototypeHead(HeadOutputs):
    """K prototypes (a bias-free 1×1 conv), optional MLP, independent cls and conf layers.

    Args:
        d: channels of the attach point's feature map.
        num_classes: N, outputs of the cls and conf layers.
        prototypes: K, number of prototype vectors.
        kind: ``basic`` (representation = M) or ``augmented``
            (representation = MLP(LayerNorm(M)), MLP = Linear(K,2K), GELU, Dropout(0.1),
            Linear(2K,K)).
        cascade_input_dim: when > 0, the previous branch's logits (this many) are
            detached, layer-normalised without affine parameters, and concatenated to
            the representation before the cls and conf layers (ZTW).
    """

    def __init__(
        self,
        d: int,
        num_classes: int,
        prototypes: int = 64,
        kind: str = "basic",
        cascade_input_dim: int = 0,
    ) -> None:
        super().__init__()
        if kind not in PROTOTYPE_KINDS:
            raise ValueError(f"head kind '{kind}' is not one of {PROTOTYPE_KINDS}")
        self.config = {
            "d": d,
            "num_classes": num_classes,
            "prototypes": prototypes,
            "kind": kind,
            "cascade_input_dim": cascade_input_dim,
        }
        k = prototypes
        self.proto = nn.Conv2d(d, k, kernel_size=1, bias=False)  # weight K×d×1×1 = W
        if kind == "augmented":
            self.norm = nn.LayerNorm(k)
            self.mlp = nn.Sequential(
                nn.Linear(k, 2 * k), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * k, k)
            )
        rep_dim = k + cascade_input_dim
        self.cls = nn.Linear(rep_dim, num_classes)
        self.conf = nn.Linear(rep_dim, num_classes)
        rows, cols = torch.triu_indices(d, d)
        self.register_buffer("_tri_rows", rows, persistent=False)
        self.register_buffer("_tri_cols", cols, persistent=False)

    @property
    def prototype_matrix(self) -> torch.Tensor:
        """W as a K×d matrix (a view of the 1×1 conv weight)."""
        return self.proto.weight.flatten(1)

    def responses_from_gram(self, g_packed: torch.Tensor) -> torch.Tensor:
        """M (N×K) from packed Gram matrices (N×d(d+1)/2): M_k = w_kᵀ G w_k."""
        w = self.prototype_matrix  # K×d
        # w_kᵀ G w_k = Σ_i G_ii w_ki² + 2 Σ_{i<j} G_ij w_ki w_kj: one matmul on the packed form.
        coef = w[:, self._tri_rows] * w[:, self._tri_cols]  # K×P
        off_diag = self._tri_rows != self._tri_cols
        coef = torch.where(off_diag, 2.0 * coef, coef)
        return g_packed @ coef.t()  # N×K

    def responses_from_map(self, x: torch.Tensor) -> torch.Tensor:
        """M (N×K) from raw maps (N×d×H×W): 1×1 conv, square, mean over positions."""
        return self.proto(x).square().mean(dim=(2, 3))

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """M from either input form: 4-D = raw map, 2-D = packed Gram."""
        if x.ndim == 4:
            return self.responses_from_map(x)
        if x.ndim == 2 and x.shape[1] == packed_size(self.config["d"]):
            return self.responses_from_gram(x)
        raise ValueError(
            f"head input has shape {tuple(x.shape)}; expected N×d×H×W or "
            f"N×{packed_size(self.config['d'])} (packed Gram, d={self.config['d']})"
        )

    def represent(self, m: torch.Tensor, prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Representation fed to the output layers: N×K, or N×(K+C_prev) with cascade input."""
        rep = self.mlp(self.norm(m)) if self.config["kind"] == "augmented" else m
        return self.with_cascade_input(rep, prev_logits)


def head_form(kind: str) -> str:
    """The cache form a head kind reads (``data.feature_cache.HEAD_FORMS``, the one table the
    light workflow code reads too): ``proto`` (packed Gram or raw map, whichever is smaller),
    ``pooled`` (``exit_heads.pooled_features``) or ``map`` (the raw map)."""
    if kind not in HEAD_KINDS:
        raise CalexError(
            f"head kind '{kind}' is not one of {', '.join(HEAD_KINDS)}; fix the recipe"
        )
    return HEAD_FORMS[kind]


def head_config(kind: str, d: int, h: int, w: int, num_classes: int, prototypes: int = 64,
                cascade_input_dim: int = 0) -> dict:  # fmt: skip
    """The constructor arguments (``config``) of a head of ``kind`` for a d×H×W attach point:
    what ``build_head`` takes and a branch checkpoint records."""
    head_form(kind)  # a one-line error for an unknown kind
    config = {"kind": kind, "d": d, "num_classes": num_classes,
              "cascade_input_dim": cascade_input_dim}  # fmt: skip
    if kind in PROTOTYPE_KINDS:
        config["prototypes"] = prototypes
    elif kind in ("sdn", "ztw_cascading"):
        config.update(h=h, w=w)
    return config


def new_head(kind: str, *, d: int, h: int, w: int, num_classes: int,
             cascade_input_dim: int = 0, prototypes: int = 64) -> nn.Module:  # fmt: skip
    """A freshly initialised head of ``kind`` for a d×H×W attach point (seed the RNG first)."""
    return build_head(head_config(kind, d, h, w, num_classes, prototypes, cascade_input_dim))


def build_head(config: dict) -> nn.Module:
    """The head a saved ``config`` describes (its ``kind`` picks the class)."""
    kind = config.get("kind")
    if kind in PROTOTYPE_KINDS:
        return PrototypeHead(**config)
    if kind in LITERATURE_HEADS:
        return LITERATURE_HEADS[kind](**config)
    raise CalexError(f"head kind '{kind}' is not one of {', '.join(HEAD_KINDS)}; fix the recipe")


def head_macs(head: nn.Module, d: int, h: int, w: int) -> int:
    """MACs of the head's inference path on one raw d×H×W map (docs/method.md#flops).

    Convolutions and linear layers are counted by :func:`calex_steps.flops.count_macs`
    on a 1-sample dummy map (pooling, BatchNorm and activations are not counted). A
    prototype head's path is the 1×1 conv on the map, whose squaring (K·H·W) is not a
    layer and is added here; the other kinds run on their cache form of the map
    (``cache_input``), which is what their inference form computes.
    """
    param = next(head.parameters())
    x = torch.zeros(1, d, h, w, dtype=param.dtype, device=param.device)
    prev_dim = head.config["cascade_input_dim"]
    prev = torch.zeros(1, prev_dim, dtype=param.dtype, device=param.device) if prev_dim else None
    if isinstance(head, LiteratureHead):
        return count_macs(head, head.cache_input(x), prev)
    return count_macs(head, x, prev) + head.config["prototypes"] * h * w
