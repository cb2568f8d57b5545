"""calex_steps.training.adam computes what torch.optim.Adam computes, step for step."""

from __future__ import annotations

import torch

from calex_steps.training.adam import Adam


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=gen)) for _ in range(2)]


def test_adam_equals_torch_adam_and_resumes():
    mine, ref, resumed = _params(0), _params(0), _params(0)
    ours = Adam(mine, lr=0.01, weight_decay=0.05)
    theirs = torch.optim.Adam(ref, lr=0.01, weight_decay=0.05)
    gen = torch.Generator().manual_seed(1)
    targets = [torch.randn(5, 3, generator=gen) for _ in range(12)]
    for step, target in enumerate(targets):
        lr = 0.01 * (1 - step / 12)
        for opt, params in ((ours, mine), (theirs, ref)):
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            sum(((p - target) ** 3).abs().sum() for p in params).backward()
            opt.step()
        if step == 5:
            saved = ours.state_dict()
            with torch.no_grad():
                for p, q in zip(resumed, mine, strict=True):
                    p.copy_(q)
            again = Adam(resumed, lr=1.0, weight_decay=0.05)
            again.load_state_dict(saved)
        elif step > 5:
            again.param_groups[0]["lr"] = lr
            again.zero_grad()
            sum(((p - target) ** 3).abs().sum() for p in resumed).backward()
            again.step()
    for a, b, c in zip(mine, ref, resumed, strict=True):
        assert torch.equal(a, b), (a - b).abs().max()
        assert torch.equal(a, c)
    assert not torch.equal(mine[0], _params(0)[0])
