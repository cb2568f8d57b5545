"""Where exits go: the blocks of calex's CIFAR ResNets with their cumulative MACs, counted by
arithmetic, and the placement rules that turn an exit specification into block names.

An exit specification (``backbones.<b>.attach_points``, ``recipes.<r>.exits``) is either a
list of block names or a rule object (docs/exits.md):

- ``{placement: sdn}``: Shallow-Deep Networks' six internal classifiers at 15, 30, 45, 60,
  75 and 90 % of the backbone's MACs. The SDN code hard-codes the blocks per network; for
  its ResNet-56 on 32-pixel images they are the blocks whose cumulative MACs are NEAREST to
  each fraction (layer1.3, layer1.7, layer2.2, layer2.6, layer3.1, layer3.5: 15.4, 30.4,
  44.5, 59.6, 73.7 and 88.7 %; two of them lie below their fraction), and that nearest-block
  rule is what ``sdn`` applies to any backbone. The same rule also reproduces the tables
  that code hard-codes for its VGG-16 and WRN-32-4.
- ``{placement: macs, fractions: [...]}``: the same nearest-block rule at any fractions.
  Two distinct fractions that land on one block are an error (``sdn`` and ``macs`` never
  move an exit to a neighbouring block).
- ``{placement: pteenet_fine|pteenet_pareto|pteenet_linear|pteenet_golden, count: N}``:
  PTEEnet's distributions (from its code, ``set_thresholds`` and ``is_suitable_for_exit``
  of its EENet model). Exit i = 0..N-1 gets the threshold fraction
  fine ``1 - 0.95**(i+1)``, pareto ``1 - 0.8**(i+1)``, linear ``(i+1) / (N+1)``,
  golden ``phi**(i-N)`` (phi = 1.61803398875; PTEEnet's option ``gold_ratio``). Walking the
  blocks in forward order, the next exit goes after the FIRST block whose cumulative MACs
  reach its threshold; one exit per block, so thresholds that fall inside one block push
  the later exits to later blocks, and a count the blocks cannot hold is an error (PTEEnet
  stops with an assertion). Where calex differs: PTEEnet measures costs with a FLOP
  counter that also counts batch-norm, ReLU and pooling operations, on its own ResNets
  whose down-sampling blocks have 1×1 projection shortcuts; calex counts convolutions and
  linear layers only (``models.flops``), on calex's backbone as built (the He family has
  zero-padding shortcuts), so a threshold near a block boundary can land one block apart.

Every fraction is of the whole network's MACs, classifier included (as both codes count).
A candidate block is a name ``models.attach_points.candidate_names`` lists: ``layerK.i``
for every block but a stage's last, which is ``layerK``. This module does not import torch:
the Snakefile resolves the configuration's exits at parse time. ``torchvision:<name>``
backbones have no arithmetic here: their exits are block names, and the lister
(``python -m calex_steps.backbones --list-attach-points ARCH --placement RULE``, which
counts MACs on the built model) resolves a rule for them by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from calex_steps.errors import CalexError
from calex_steps.workflow import resources

LISTER = "python -m calex_steps.backbones --list-attach-points"
STEM_INPUT_CHANNELS = 3

# arch -> (block, blocks per stage, stage planes at width 1, shortcut kind): the same table
# as models/backbones.py builds from (tests/test_placement.py holds the two equal).
CIFAR_ARCHS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], str]] = {
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512), "proj"),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), "proj"),
    **{
        f"resnet{depth}": ("basic", ((depth - 2) // 6,) * 3, (16, 32, 64), "pad")
        for depth in (20, 32, 44, 56, 110)
    },
}
SDN_FRACTIONS = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90)
GOLDEN_RATIO = 1.61803398875  # the constant PTEEnet's code uses
PTEENET_RULES = ("pteenet_fine", "pteenet_pareto", "pteenet_linear", "pteenet_golden")
RULES = ("sdn", "macs", *PTEENET_RULES)
RULE_KEYS = {"sdn": (), "macs": ("fractions",), **{r: ("count",) for r in PTEENET_RULES}}


def scale_channels(channels: int, width: float) -> int:
    """Channels of a stage after the width multiplier, as ``models.backbones`` rounds them."""
    return max(1, int(round(channels * width)))


def _out_side(side: int, stride: int) -> int:
    """Side of a 3×3 (padding 1) or 1×1 convolution's output at ``stride``."""
    return (side - 1) // stride + 1


def _block_macs(
    block: str, in_ch: int, planes: int, stride: int, shortcut: str, side: int
) -> tuple[int, int, int]:
    """(MACs, output channels, output side) of one residual block on a side×side input."""
    out = _out_side(side, stride)
    if block == "basic":
        out_ch = planes
        macs = out * out * planes * 9 * (in_ch + planes)  # 3×3 in→planes (stride), planes→planes
    else:
        out_ch = 4 * planes  # 1×1 reduce at the input side, 3×3 (stride), 1×1 expand
        macs = side * side * planes * in_ch + out * out * planes * (9 * planes + out_ch)
    if shortcut == "proj" and (stride != 1 or in_ch != out_ch):
        macs += out * out * out_ch * in_ch  # the 1×1 projection; zero padding costs nothing
    return macs, out_ch, out


def _spec(arch: str) -> tuple[str, tuple[int, ...], tuple[int, ...], str]:
    if arch not in CIFAR_ARCHS:
        known = ", ".join(CIFAR_ARCHS)
        raise CalexError(f"no MAC arithmetic for backbone arch '{arch}'; known: {known}")
    return CIFAR_ARCHS[arch]


def candidate_blocks(arch: str) -> list[str]:
    """The candidate block names of a CIFAR ResNet, in forward order."""
    _, depths, _, _ = _spec(arch)
    names = []
    for s, n in enumerate(depths, start=1):
        names += [f"layer{s}.{j}" for j in range(n - 1)] + [f"layer{s}"]
    return names


def block_macs(
    arch: str, width: float = 1.0, input_size: int = 32, num_classes: int = 10
) -> tuple[list[tuple[str, int]], int]:
    """``([(candidate name, cumulative MACs)], total MACs)`` of a CIFAR ResNet.

    Per-sample MACs of the convolutions and linear layers (what ``models.flops`` counts)
    on one ``input_size``² RGB image: stem, then every block in forward order; the total
    adds the classifier (last stage's channels × ``num_classes``).
    """
    if width <= 0 or input_size < 1 or num_classes < 1:
        raise CalexError(
            f"width {width}, input size {input_size} and classes {num_classes} must be positive"
        )
    block, depths, planes, shortcut = _spec(arch)
    scaled = [scale_channels(p, width) for p in planes]
    side, channels = input_size, scaled[0]
    running = side * side * channels * STEM_INPUT_CHANNELS * 9  # 3×3 stem, stride 1
    names = iter(candidate_blocks(arch))
    blocks = []
    for s, (n, p) in enumerate(zip(depths, scaled, strict=True)):
        for j in range(n):
            stride = 2 if s > 0 and j == 0 else 1
            macs, channels, side = _block_macs(block, channels, p, stride, shortcut, side)
            running += macs
            blocks.append((next(names), running))
    return blocks, running + channels * num_classes


def pteenet_thresholds(rule: str, count: int) -> list[float]:
    """PTEEnet's threshold fraction of each of ``count`` exits under ``rule``."""
    kind = rule.removeprefix("pteenet_")
    if kind == "fine":
        return [1 - 0.95 ** (i + 1) for i in range(count)]
    if kind == "pareto":
        return [1 - 0.8 ** (i + 1) for i in range(count)]
    if kind == "linear":
        return [(i + 1) / (count + 1) for i in range(count)]
    return [GOLDEN_RATIO ** (i - count) for i in range(count)]


def rule_label(rule: dict) -> str:
    """How a rule reads in messages and listings: ``sdn``, ``macs 0.2,0.5``, ``pteenet_fine x4``."""
    name = rule["placement"]
    if name == "macs":
        return "macs " + ",".join(f"{f:g}" for f in rule["fractions"])
    return f"{name} x{rule['count']}" if name in PTEENET_RULES else name


def parse_spec(spec, where: str) -> tuple[str, list[str] | dict]:
    """``("names", [...])`` or ``("rule", {...})`` from an exit specification; a malformed
    one raises a one-line CalexError naming ``where`` (the configuration key)."""
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(n, str) for n in spec):
        return "names", list(spec)
    if not isinstance(spec, dict) or spec.get("placement") not in RULES:
        raise CalexError(
            f"{where} must be a list of block names or a rule {{placement: <rule>}} with rule "
            f"one of {', '.join(RULES)}; got {spec!r}"
        )
    rule = spec["placement"]
    wanted = RULE_KEYS[rule]
    extra = sorted(set(spec) - {"placement", *wanted})
    missing = [k for k in wanted if k not in spec]
    if extra or missing:
        takes = f"takes {', '.join(wanted)}" if wanted else "takes no other key"
        raise CalexError(f"{where}: placement {rule} {takes}; got {sorted(spec)}")
    if rule == "macs":
        fractions = spec["fractions"]
        if not fractions or any(not 0 < f < 1 for f in fractions):
            raise CalexError(f"{where}.fractions must be numbers between 0 and 1; got {fractions}")
        if len(set(fractions)) != len(fractions):
            raise CalexError(f"{where}.fractions repeats a value: {fractions}")
        return "rule", {"placement": rule, "fractions": sorted(fractions)}
    if rule in PTEENET_RULES:
        count = spec["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise CalexError(f"{where}.count must be a whole number >= 1; got {count!r}")
        return "rule", {"placement": rule, "count": count}
    return "rule", {"placement": rule}


def _nearest(targets: Sequence[float], blocks, total: int, label: str, where: str) -> list[str]:
    """The block whose cumulative MAC fraction is nearest to each target (earlier on a tie)."""
    shares = [macs / total for _, macs in blocks]
    taken: dict[int, float] = {}
    for f in targets:
        best = min(range(len(blocks)), key=lambda i: (abs(shares[i] - f), i))
        if best in taken:
            name = blocks[best][0]
            raise CalexError(
                f"{where}: placement {label} puts fractions {taken[best]:g} and {f:g} both at "
                f"{name} ({shares[best]:.1%} of the MACs); drop one, spread them out, or list "
                "block names"
            )
        taken[best] = f
    return [blocks[i][0] for i in sorted(taken)]


def _first_past(thresholds: Sequence[float], blocks, total: int, label: str, where: str):
    """PTEEnet's walk: the next exit after the first block reaching its threshold."""
    chosen: list[str] = []
    for name, macs in blocks:
        if len(chosen) < len(thresholds) and macs >= thresholds[len(chosen)] * total:
            chosen.append(name)
    if len(chosen) < len(thresholds):
        raise CalexError(
            f"{where}: placement {label} fits only {len(chosen)} exits, one per block from "
            f"{thresholds[0]:.1%} of the MACs on; lower count"
        )
    return chosen


def place(rule: dict, blocks: Sequence[tuple[str, int]], total: int, where: str) -> list[str]:
    """Block names, in forward order, that a parsed ``rule`` picks among ``blocks``
    (``[(name, cumulative MACs)]`` in forward order; ``total``: the whole network's MACs)."""
    label = rule_label(rule)
    if rule["placement"] == "sdn":
        return _nearest(SDN_FRACTIONS, blocks, total, label, where)
    if rule["placement"] == "macs":
        return _nearest(rule["fractions"], blocks, total, label, where)
    thresholds = pteenet_thresholds(rule["placement"], rule["count"])
    return _first_past(thresholds, blocks, total, label, where)


def check_names(names: Sequence[str], arch: str, where: str) -> list[str]:
    """``names`` as candidate blocks of ``arch`` in forward order; ``layerK.<last>`` is
    written ``layerK``. An unknown or repeated name raises a CalexError."""
    candidates = candidate_blocks(arch)
    _, depths, _, _ = _spec(arch)
    last = {f"layer{s}.{n - 1}": f"layer{s}" for s, n in enumerate(depths, start=1)}
    resolved = []
    for name in names:
        name = last.get(name, name)
        if name not in candidates:
            raise CalexError(
                f"{where} names '{name}', which is not a block of {arch}; use a stage "
                f"(layer1..layer{len(depths)}) or a block layerK.i, as `{LISTER} {arch}` lists"
            )
        if name in resolved:
            raise CalexError(f"{where} names the block '{name}' twice")
        resolved.append(name)
    return sorted(resolved, key=candidates.index)


def resolve_exits(
    arch: str, width: float, input_size: int, num_classes: int, spec, where: str = "exits"
) -> list[str]:
    """The block names, in forward order, that an exit specification means on a backbone.

    ``spec``: a list of block names (checked against the candidates and put in forward
    order) or a rule object (see the module docstring). Backbones without MAC arithmetic
    here (``torchvision:<name>``) take names only, checked when the model is built.
    ``where`` names the configuration key in error messages.
    """
    kind, value = parse_spec(spec, where)
    if arch not in CIFAR_ARCHS:  # torchvision:<name>
        if kind == "names":
            return list(value)
        raise CalexError(
            f"{where}: a placement rule needs MACs per block, which calex computes without "
            f"torch for its CIFAR ResNets only; run `{LISTER} {arch} --placement "
            f"{rule_label(value)}` and write the block names it prints"
        )
    if kind == "names":
        return check_names(value, arch, where)
    blocks, total = block_macs(arch, width, input_size, num_classes)
    return place(value, blocks, total, where)


def dataset_input(config: dict, dataset: str) -> tuple[int, int]:
    """(input side, classes the backbone is pretrained on) of a study dataset."""
    settings = config["datasets"][dataset]
    side = settings["image_size"] if settings["source"] == "image_folder" else resources.IMAGE_SIDE
    return side, resources.num_classes(config, dataset)[1]


def _resolve_everywhere(backbone: dict, spec, inputs: list, where: str) -> list[str]:
    """One backbone's exits, which must not depend on which study dataset it runs on."""
    found = {}
    for side, classes in inputs:
        names = resolve_exits(backbone["arch"], backbone["width"], side, classes, spec, where)
        found.setdefault(tuple(names), (side, classes))
    if len(found) > 1:
        (a, at_a), (b, at_b) = list(found.items())[:2]
        raise CalexError(
            f"{where} picks {list(a)} at {at_a[0]} px ({at_a[1]} classes) but {list(b)} at "
            f"{at_b[0]} px ({at_b[1]} classes) among the study's datasets; list block names"
        )
    return list(next(iter(found)))


def resolve_config_exits(config: dict) -> dict[str, dict[str, list[str]]]:
    """Resolve the exits of a validated configuration (defaults filled) to block names, once.

    Every ``backbones.<b>.attach_points`` is replaced, in place, by its block names. Returns
    ``{recipe: {backbone: [names]}}`` for every study recipe on every study backbone: the
    recipe's ``exits`` (those of its ``branches_from`` recipe when it borrows branches),
    by default the backbone's attach points. A rule is resolved at the input size and
    classes of each study dataset and must pick the same blocks on all of them.
    """
    inputs = sorted({dataset_input(config, d) for d in config["study"]["datasets"]})
    backbones = config["backbones"]
    for name, backbone in backbones.items():
        where = f"backbones.{name}.attach_points"
        backbone["attach_points"] = _resolve_everywhere(
            backbone, backbone["attach_points"], inputs, where
        )
    resolved: dict[str, dict[str, list[str]]] = {}
    for recipe in config["study"]["recipes"]:
        owner = config["recipes"][recipe].get("branches_from") or recipe
        spec = config["recipes"][owner].get("exits")
        where = f"recipes.{owner}.exits"
        resolved[recipe] = {
            b: list(backbones[b]["attach_points"])
            if spec is None
            else _resolve_everywhere(backbones[b], spec, inputs, where)
            for b in config["study"]["backbones"]
        }
        resolved.setdefault(owner, resolved[recipe])  # a source outside the study trains too
    return resolved
