"""Check that the synthetic set is a real learning problem (docs/method.md#data).

Trains a CIFAR ResNet18 at width 0.125 (8/16/32/64 channels) on the fine
labels of the synthetic train split for a few CPU epochs, then fits linear
probes on orderless statistics (per-channel mean and mean of squares over
positions, what a prototype head can see) of the frozen layer1, layer2 and
layer3 maps against the coarse labels. Prints test accuracies overall and by
difficulty tercile. Run from the repository root:

    .venv/bin/python bench/synthetic_check.py [--epochs 6] [--n-train 4000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calex_steps.data.synthetic import make_synthetic


class _Block(nn.Module):
    """CIFAR BasicBlock: two 3×3 convs with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class TinyResNet18(nn.Module):
    """CIFAR ResNet18 (3×3 stem, no max-pool) with a width multiplier."""

    def __init__(self, num_classes: int, width: float = 0.125):
        super().__init__()
        ch = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, ch[0], 3, 1, 1, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU()
        )
        cins = [ch[0]] + ch[:-1]
        self.layers = nn.ModuleList(
            nn.Sequential(_Block(ci, co, 1 if i == 0 else 2), _Block(co, co, 1))
            for i, (ci, co) in enumerate(zip(cins, ch, strict=True))
        )
        self.fc = nn.Linear(ch[-1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits B×C and the four stage maps."""
        maps, h = [], self.stem(x)
        for layer in self.layers:
            h = layer(h)
            maps.append(h)
        return self.fc(h.mean(dim=(2, 3))), maps


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×32×32×3 -> float N×3×32×32 in about [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random crop 32 with padding 4 and horizontal flip, as in pretraining."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2,))
    x = padded[:, :, dy : dy + 32, dx : dx + 32]
    flip = torch.rand(n) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train_backbone(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """SGD momentum 0.9, lr 0.05 cosine, batch 64, weight decay 5e-4."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(_augment(x[idx]))[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Final logits and orderless stats [mean, mean of squares] (N×2d) of each stage."""
    logits, stats = [], [[] for _ in range(4)]
    for chunk in x.split(500):
        out, maps = model(chunk)
        logits.append(out)
        for i, m in enumerate(maps):
            stats[i].append(torch.cat([m.mean(dim=(2, 3)), m.pow(2).mean(dim=(2, 3))], dim=1))
    return torch.cat(logits), [torch.cat(s) for s in stats]


def linear_probe(
    ftr: torch.Tensor, ytr: torch.Tensor, fte: torch.Tensor, classes: int
) -> torch.Tensor:
    """Full-batch Adam on a standardised linear classifier; returns test predictions."""
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    lin = nn.Linear(ftr.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=0.02, weight_decay=1e-4)
    for _ in range(300):
        loss = F.cross_entropy(lin((ftr - mu) / sd), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return lin((fte - mu) / sd).argmax(1)


def report(name: str, pred: torch.Tensor, y: torch.Tensor, tercile: np.ndarray) -> None:
    """Print overall accuracy and accuracy per difficulty tercile."""
    hit = (pred == y).numpy()
    parts = " ".join(f"{hit[tercile == t].mean():.3f}" for t in range(3))
    print(f"{name:<28} acc {hit.mean():.3f}   by difficulty tercile (easy..hard): {parts}")


def main() -> None:
    """Generate, train, probe, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--num-coarse", type=int, default=8)
    p.add_argument("--fine-per-coarse", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    t0 = time.time()
    splits, _, _ = make_synthetic(a.n_train, 100, a.n_test, a.num_coarse, a.fine_per_coarse, a.seed)
    print(f"generated in {time.time() - t0:.2f} s")
    tr, te = splits["train"], splits["test"]
    xtr, xte = _to_tensor(tr["images"]), _to_tensor(te["images"])
    yc_tr, yc_te = torch.from_numpy(tr["labels"]), torch.from_numpy(te["labels"])
    fine_to_coarse = torch.arange(a.num_coarse).repeat_interleave(a.fine_per_coarse)
    tercile = np.digitize(te["difficulty"], np.quantile(te["difficulty"], [1 / 3, 2 / 3]))
    model = TinyResNet18(a.num_coarse * a.fine_per_coarse)
    t0 = time.time()
    train_backbone(model, xtr, torch.from_numpy(tr["fine_labels"]), a.epochs)
    print(f"trained {a.epochs} epochs in {time.time() - t0:.0f} s")
    logits_te, stats_te = features(model, xte)
    _, stats_tr = features(model, xtr)
    print(f"chance (coarse)              acc {1 / a.num_coarse:.3f}")
    report("backbone (fine -> coarse)", fine_to_coarse[logits_te.argmax(1)], yc_te, tercile)
    for i in range(4):
        pred = linear_probe(stats_tr[i], yc_tr, stats_te[i], a.num_coarse)
        report(f"orderless probe layer{i + 1}", pred, yc_te, tercile)


if __name__ == "__main__":
    main()
