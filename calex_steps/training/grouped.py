"""S prototype heads of one configuration (one per seed) as one module with a seed axis.

Every parameter of :class:`calex_steps.models.heads.PrototypeHead` gets a
leading dimension S, and every layer becomes a batched matmul, so S seeds'
heads train in one computation: run s sees only its own batch (S×B inputs) and
its own parameters. The MLP's dropout draws each run's mask from its own
generator, seeded as a single run seeds the global one, so the masks (and the
heads) are those of separate runs up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calex_steps.models.heads import PrototypeHead

DROPOUT = 0.1  # the MLP's dropout probability in PrototypeHead
LAYERS = ("cls", "conf")


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """S×B×I inputs, S×O×I weights, S×O biases -> S×B×O."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class GroupedHeads(nn.Module):
    """The stacked parameters of S same-configured heads (names: the head's, dots as _)."""

    def __init__(self, heads: list[PrototypeHead]) -> None:
        super().__init__()
        configs = [h.config for h in heads]
        if any(c != configs[0] for c in configs):
            raise ValueError("heads trained together must share one configuration")
        self.config = dict(configs[0])
        self.names = [name for name, _ in heads[0].named_parameters()]
        for name in self.names:
            stacked = torch.stack([dict(h.named_parameters())[name].detach() for h in heads])
            self.register_parameter(name.replace(".", "_"), nn.Parameter(stacked.clone()))
        self.register_buffer("_rows", heads[0]._tri_rows.clone(), persistent=False)
        self.register_buffer("_cols", heads[0]._tri_cols.clone(), persistent=False)
        self.dropout_gens: list[torch.Generator] | None = None

    def param(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "_"))

    def copy_to(self, heads: list[PrototypeHead]) -> None:
        """Write run s's parameters into ``heads[s]``."""
        with torch.no_grad():
            for s, head in enumerate(heads):
                for name, p in head.named_parameters():
                    p.copy_(self.param(name)[s])

    def classification_parameters(self) -> list[nn.Parameter]:
        return [self.param(n) for n in self.names if not n.startswith("conf.")]

    def conf_parameters(self) -> list[nn.Parameter]:
        return [self.param(n) for n in self.names if n.startswith("conf.")]

    def reseed_dropout(self, seeds: list[int]) -> None:
        """Each run's dropout generator for the coming epoch (the seeds run_group_stage gives)."""
        self.dropout_gens = [torch.Generator().manual_seed(s) for s in seeds]

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """M (S×B×K) from S×B×P packed Grams or S×B×d×H×W maps."""
        w = self.param("proto.weight").flatten(2)  # S×K×d
        if x.ndim == 3:
            # w_kᵀ G w_k on the packed form: the products w_ki w_kj of the upper triangle,
            # doubled off the diagonal. One index_select of the outer products (S×K×d²) is
            # cheaper to differentiate than two gathers of w.
            d = w.shape[-1]
            outer = torch.einsum("ski,skj->skij", w, w).flatten(2)  # S×K×d²
            coef = outer.index_select(2, self._rows * d + self._cols)  # S×K×P
            coef = torch.where(self._rows != self._cols, 2.0 * coef, coef)
            return torch.bmm(x, coef.transpose(1, 2))
        return torch.einsum("skd,sbdhw->sbkhw", w, x).square().mean(dim=(3, 4))

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return h
        if self.dropout_gens is None:
            raise RuntimeError("call reseed_dropout before training grouped heads")
        masks = [
            torch.empty(h.shape[1:], dtype=h.dtype).bernoulli_(1 - DROPOUT, generator=g)
            for g in self.dropout_gens
        ]
        return h * torch.stack(masks).to(h.device) / (1 - DROPOUT)

    def represent(self, m: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """S×B×R representations (the head's ``represent`` for every run)."""
        rep = m
        if self.config["kind"] == "augmented":
            k = m.shape[-1]
            rep = F.layer_norm(m, (k,))
            rep = rep * self.param("norm.weight").unsqueeze(1) + self.param("norm.bias").unsqueeze(
                1
            )
            rep = F.gelu(_linear(rep, self.param("mlp.0.weight"), self.param("mlp.0.bias")))
            rep = _linear(self._dropout(rep), self.param("mlp.3.weight"), self.param("mlp.3.bias"))
        if self.config["cascade_input_dim"] > 0:
            if prev is None:
                raise ValueError("these heads have a cascade input: pass the previous logits")
            rep = torch.cat([rep, F.layer_norm(prev.detach(), prev.shape[-1:])], dim=-1)
        return rep

    def layer(self, which: str, rep: torch.Tensor) -> torch.Tensor:
        """The cls or conf layer of every run: S×B×R -> S×B×C."""
        return _linear(rep, self.param(f"{which}.weight"), self.param(f"{which}.bias"))


class LoopedHeads(nn.Module):
    """S heads of any kind (one per seed) behind the interface of :class:`GroupedHeads`: each
    run's head computes its own S×B slice in turn. The heads are trained in place, so
    ``copy_to`` has nothing to copy; heads without dropout need no reseeding."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        configs = [h.config for h in heads]
        if any(c != configs[0] for c in configs):
            raise ValueError("heads trained together must share one configuration")
        self.config = dict(configs[0])
        self.heads = nn.ModuleList(heads)

    def copy_to(self, heads: list[nn.Module]) -> None:
        if any(a is not b for a, b in zip(self.heads, heads, strict=True)):
            raise ValueError("LoopedHeads trains its heads in place; pass the same heads")

    def classification_parameters(self) -> list[nn.Parameter]:
        return [p for h in self.heads for p in h.classification_parameters()]

    def conf_parameters(self) -> list[nn.Parameter]:
        return [p for h in self.heads for p in h.conf.parameters()]

    def reseed_dropout(self, seeds: list[int]) -> None:
        """Nothing to reseed: the heads of other kinds than the prototype heads have no
        dropout (the global generator is seeded with run 0's epoch seed, as one run's)."""

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """Each run's intermediate features from its S×B... slice of ``x``, stacked."""
        return torch.stack([h.responses(x[s]) for s, h in enumerate(self.heads)])

    def represent(self, m: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """S×B×R representations (each head's ``represent`` on its own slice)."""
        return torch.stack(
            [h.represent(m[s], None if prev is None else prev[s]) for s, h in enumerate(self.heads)]
        )

    def layer(self, which: str, rep: torch.Tensor) -> torch.Tensor:
        """The cls or conf layer of every run: S×B×R -> S×B×C."""
        return torch.stack([getattr(h, which)(rep[s]) for s, h in enumerate(self.heads)])


PROTOTYPE_KINDS = ("basic", "augmented")


def group_heads(heads: list[nn.Module]) -> nn.Module:
    """Prototype heads as one batched module (:class:`GroupedHeads`), others looped."""
    if heads[0].config["kind"] in PROTOTYPE_KINDS:
        return GroupedHeads(heads)
    return LoopedHeads(heads)
