"""``python -m calex_steps.backbones --list-attach-points ARCH``: the attach points of a
backbone, and with ``--placement RULE`` the blocks an exit rule picks (docs/exits.md).

Examples, each after ``python -m calex_steps.backbones``:

    --list-attach-points resnet56 --placement sdn
    --list-attach-points resnet56 --placement pteenet_golden --count 4
    --list-attach-points resnet18 --placement macs 0.2,0.5
    --list-attach-points torchvision:resnet50 --input-size 224

Each line gives a candidate block, the map a branch there would see (channels × height ×
width), the backbone's cumulative MACs up to it and their share of the whole network's.
A rule is resolved on these counted MACs, so it works for ``torchvision:<name>`` backbones
too (the configuration resolves rules without torch, for calex's CIFAR ResNets only).
"""

from __future__ import annotations

import argparse
import sys

from calex_steps.errors import CalexError
from calex_steps.models.attach_points import default_input_size, describe_attach_points
from calex_steps.workflow.placement import parse_spec, place, rule_label


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m calex_steps.backbones",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--list-attach-points", metavar="ARCH", required=True)
    p.add_argument("--input-size", type=int, default=None, help="side in pixels (default by arch)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=10, help="classes of the final layer")
    p.add_argument(
        "--placement",
        nargs="+",
        metavar="RULE",
        help="sdn, macs F1,F2,..., or pteenet_fine|pteenet_pareto|pteenet_linear|pteenet_golden "
        "with --count",
    )
    p.add_argument("--count", type=int, default=None, help="exits of a pteenet_* rule")
    return p


def placement_spec(words: list[str], count: int | None) -> dict:
    """The rule object of ``--placement RULE [FRACTIONS] [--count N]``, as a config writes it."""
    spec: dict = {"placement": words[0]}
    if len(words) > 1:
        text = ",".join(words[1:])
        try:
            spec["fractions"] = [float(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise CalexError(
                f"--placement {words[0]} takes fractions like 0.2,0.5; got {text}"
            ) from exc
    if count is not None:
        spec["count"] = count
    return spec


def listing(rows: list, chosen: list[str]) -> list[str]:
    """Lines of the listing, each chosen block marked with its exit number."""
    total = rows[-1][2]
    lines = []
    for name, shape, macs in rows:
        where = "×".join(str(v) for v in shape) if shape else "(whole network)"
        mark = f"  <- exit {chosen.index(name) + 1}" if name in chosen else ""
        lines.append(f"{name:<14} {where:<16} {macs:>15,} {macs / total:>7.1%}{mark}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the attach points of ``--list-attach-points ARCH``; 1 on a CalexError."""
    a = build_parser().parse_args(argv)
    arch = a.list_attach_points
    size = a.input_size or default_input_size(arch)
    try:
        rows = describe_attach_points(arch, a.width, size, a.num_classes)
        chosen, rule = [], None
        if a.placement:
            _, rule = parse_spec(placement_spec(a.placement, a.count), "--placement")
            blocks = [(name, macs) for name, _, macs in rows[:-1]]
            chosen = place(rule, blocks, rows[-1][2], "--placement")
        elif a.count is not None:
            raise CalexError("--count goes with --placement pteenet_<rule>")
    except CalexError as exc:
        print(f"calex: {exc}", file=sys.stderr)
        return 1
    print(f"# attach points of {arch} at {size}×{size}, {a.num_classes} classes "
          "(name, map C×H×W, cumulative MACs, share of the whole network)")  # fmt: skip
    print("\n".join(listing(rows, chosen)))
    if rule is not None:
        share = {name: macs / rows[-1][2] for name, _, macs in rows}
        picked = ", ".join(f"{n} ({share[n]:.1%})" for n in chosen)
        print(f"# placement {rule_label(rule)}: {picked}")
        print(f"# as block names: [{', '.join(chosen)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
