"""Adam for the head-training loops, without the import cost of ``torch.optim``.

Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (as long as
importing torch itself, and about 140 MB of RSS), which every small
``train_branch`` job paid. This Adam computes exactly what
``torch.optim.Adam(params, lr, weight_decay=wd)`` computes on the CPU (its
single-tensor path, amsgrad off): the same operations in the same order, so
the heads are bit for bit those of the torch optimizer there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam with L2 weight decay added to the gradient; ``param_groups[0]["lr"]`` is the
    learning rate the next ``step`` uses (the loops' cosine schedule sets it)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.param_groups = [{"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps}]
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        self.steps += 1
        step_size = lr / (1 - beta1**self.steps)
        correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / correction2_sqrt).add_(eps)
            p.addcdiv_(m, denom, value=-step_size)

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "lr": self.param_groups[0]["lr"],
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.param_groups[0]["lr"] = state["lr"]
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq,
                               state["exp_avg"] + state["exp_avg_sq"], strict=True):  # fmt: skip
            mine.copy_(saved)
