"""The epoch loop every training stage shares, and its seeding and schedule.

All randomness of an epoch is drawn from a generator derived from the run
seed and (tags, epoch), so a run that resumes at epoch e sees exactly the
draws an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from calex_steps.errors import CalexError
from calex_steps.training.losses import weighted_mean
from calex_steps.training.weighting import sample_indices

STAGES = ("cls", "conf")  # the seed tag of a stage is its index here


def epoch_generator(seed: int, *tags: int) -> torch.Generator:
    """A CPU generator for one epoch, derived from the run seed and tags.

    Every source of randomness inside an epoch draws from it, so a run that
    resumes at epoch e sees exactly the draws an uninterrupted run would.
    """
    value = seed
    for tag in tags:
        value = (value * 1_000_003 + tag) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base_lr`` at epoch 0 towards 0 at ``epochs``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Stop with a clear message on a NaN or infinite loss."""
    if not torch.isfinite(loss):
        raise CalexError(
            f"{where}: the loss became {loss.item()}; lower the learning rate "
            "(the 'lr' key of this stage) or check the input data"
        )


def epoch_indices(n: int, weights: np.ndarray | None, gen: torch.Generator) -> torch.Tensor:
    """One epoch's sample order: a permutation, or N weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    rng = np.random.default_rng(gen.initial_seed())
    return torch.from_numpy(sample_indices(weights, n, rng))


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """How every epoch walks the training split.

    ``branch`` tags the seed (1..L for a branch, 0 for a joint stage);
    ``sampling`` = survivor weights to draw N indices from (None: a permutation);
    ``loss_weights`` = mean-1 per-sample loss weights (None: plain mean).
    """

    n: int
    batch_size: int
    seed: int
    branch: int
    sampling: np.ndarray | None = None
    loss_weights: torch.Tensor | None = None


def run_stage(
    name: str,
    epochs: int,
    start_epoch: int,
    batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    plan: EpochPlan,
    on_epoch_end: Callable[[int], None],
    log: logging.Logger,
    describe: Callable[[float, torch.Tensor], str] | None = None,
    label: str | None = None,
) -> None:
    """The epoch loop of every branch stage, sequential or joint (one run: a group of one).

    ``batch_loss(idx)`` returns (per-sample loss N_b, hit flags N_b or L×N_b)
    for the training indices ``idx``. Epochs ``start_epoch..epochs-1`` run; each
    one reseeds from (seed, branch, stage, epoch), sets the cosine learning
    rate, and ends with ``on_epoch_end(epochs_done)`` (the scratch save) and one
    log line: ``label`` (default: the branch and stage), the epoch, and
    ``describe(mean loss, hit rate)`` (default: the loss and the hit rate).
    """

    def group_loss(idxs: list[torch.Tensor]):
        per_sample, hit = batch_loss(idxs[0])
        return [per_sample], [hit]

    labels = None if label is None else [label]
    run_group_stage(name, epochs, start_epoch, group_loss, optimizer, base_lr, [plan],
                    on_epoch_end, log, describe, labels)  # fmt: skip


def run_group_stage(
    name: str,
    epochs: int,
    start_epoch: int,
    batch_loss: Callable[[list[torch.Tensor]], tuple[list, list]],
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    plans: list[EpochPlan],
    on_epoch_end: Callable[[int], None],
    log: logging.Logger,
    describe: Callable[[float, torch.Tensor], str] | None = None,
    labels: list[str] | None = None,
    on_epoch_start: Callable[[list[int]], None] | None = None,
) -> None:
    """The epoch loop of S independent runs trained in one computation (S = 1: one run).

    Run s walks its training split with ``plans[s]`` (its own seed, order and weights)
    exactly as it would alone: ``batch_loss(idxs)`` gets one index tensor per run and
    returns per-run lists (per-sample losses N_b, hit flags N_b or L×N_b). The step
    minimises the sum of the runs' losses, whose gradient for run s's parameters is run
    s's own; with an elementwise optimizer (Adam) every run takes the step it would take
    alone. ``on_epoch_start`` receives each run's epoch seed (for its own dropout draws);
    the global generator is seeded with run 0's, as a single run does.
    """
    sizes = {(p.n, p.batch_size) for p in plans}
    if len(sizes) != 1:
        raise CalexError(f"runs trained together need one split size and batch size, got {sizes}")
    n, batch_size = sizes.pop()
    wheres = labels or [f"branch {p.branch} stage {name}" for p in plans]
    if labels is None and len(plans) > 1:
        wheres = [f"seed {p.seed} {w}" for p, w in zip(plans, wheres, strict=True)]
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        gens = [epoch_generator(p.seed, p.branch, STAGES.index(name), epoch) for p in plans]
        torch.manual_seed(gens[0].initial_seed())  # dropout draws from the global generator
        if on_epoch_start is not None:
            on_epoch_start([g.initial_seed() for g in gens])
        set_lr(optimizer, cosine_lr(base_lr, epoch, epochs))
        orders = [epoch_indices(n, p.sampling, g) for p, g in zip(plans, gens, strict=True)]
        loss_sums, hits = [0.0] * len(plans), [torch.zeros(())] * len(plans)
        for start in range(0, n, batch_size):
            idxs = [order[start : start + batch_size] for order in orders]
            per_sample, hit = batch_loss(idxs)
            losses = []
            for s, (plan, idx) in enumerate(zip(plans, idxs, strict=True)):
                w = None if plan.loss_weights is None else plan.loss_weights[idx]
                w = None if w is None else w.to(per_sample[s].device)
                losses.append(weighted_mean(per_sample[s], w))
                check_finite(losses[-1], f"{wheres[s]} epoch {epoch + 1}")
                hits[s] = hits[s] + hit[s].sum(dim=-1).cpu().float()
            optimizer.zero_grad(set_to_none=True)
            (losses[0] if len(losses) == 1 else torch.stack(losses).sum()).backward()
            optimizer.step()
            for s, loss in enumerate(losses):
                loss_sums[s] += loss.item() * len(idxs[s])
        on_epoch_end(epoch + 1)
        spent = time.perf_counter() - began
        for s, where in enumerate(wheres):
            rate, mean_loss = hits[s] / n, loss_sums[s] / n
            if describe is None:
                what = "agree" if name == "cls" else "conf_acc"
                stats = f"loss {mean_loss:.4f} {what} {float(rate):.3f}"
            else:
                stats = describe(mean_loss, rate)
            log.info("%s epoch %d/%d %s %.1fs", where, epoch + 1, epochs, stats, spent)


class TensorRows:
    """A torch view of a row source (``CacheRows`` or an array): ``rows[idx]`` -> float32
    CPU tensor for a LongTensor or a slice, ``len(rows)`` = N."""

    def __init__(self, rows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return torch.from_numpy(np.ascontiguousarray(self.rows[key], dtype=np.float32))


EVAL_BLOCK_BYTES = 32 * 2**20  # inputs per forward pass when nothing is trained


@torch.no_grad()
def representations(
    head, x, prev: torch.Tensor | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(representation N×R, cls logits N×C) of a ``PrototypeHead`` in eval mode, on its device.

    ``x`` is read in consecutive blocks of about ``EVAL_BLOCK_BYTES`` (at least
    ``batch_size`` rows): no gradient is kept, so a larger block only saves per-call work.
    """
    head.eval()
    device = next(head.parameters()).device
    reps, logits = [], []
    start, block = 0, batch_size
    while start < len(x):
        xb = x[start : start + block].to(device)
        pb = None if prev is None else prev[start : start + block].to(device)
        rep = head.represent(head.responses(xb), pb)
        reps.append(rep)
        logits.append(head.cls(rep))
        start += len(xb)
        row_bytes = xb[0].numel() * 4
        block = max(batch_size, EVAL_BLOCK_BYTES // max(row_bytes, 1))
    return torch.cat(reps), torch.cat(logits)
