"""The cascade's network as ONNX: one export, cut into the parts the cascade graph runs.

``export_parts`` exports ``CascadeParts`` (every segment, head and the tail of a
``CascadeModel`` run on every sample, no exit) with the torch.export-based exporter,
opset 18, the batch dimension dynamic. Its outputs are named: ``map{b}`` (segment b's
feature map), ``cls{b}`` (branch b's class logits, BoostNet's additive F_b included),
``conf{b}`` (its confidence logits, only when the exit signal reads them) and ``logits``
(the classifier's). ``cut_parts`` extracts from it the graph of each stage (segment and
head: ``images`` or ``map{b-1}`` [and ``cls{b-1}`` when the head or BoostNet reads the
previous logits] -> ``map{b}``, ``cls{b}`` [, ``conf{b}``]), of the tail and of the plain
backbone. Heads are exported as the module's own ``forward(x, prev)``, so any head kind
with that signature exports without change (docs/deploy.md).
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from calex_steps.cascade.module import CascadeModel
from calex_steps.deploy.onnx_graph import INPUT, LOGITS, Parts
from calex_steps.errors import CalexError

OPSET = 18


class CascadeParts(nn.Module):
    """A ``CascadeModel`` without its exits: uint8 N×H×W×3 images -> every part's output."""

    def __init__(self, model: CascadeModel) -> None:
        super().__init__()
        self.model = model
        self.with_conf = model.signal == 0  # only the branch signal reads the conf logits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(map0, cls0[, conf0], map1, ..., logits)."""
        m = self.model
        x = m.prepare(images)
        outs: list[torch.Tensor] = []
        prev = None
        for b, (segment, head) in enumerate(zip(m.segments, m.heads, strict=True)):
            x = segment(x)
            cls_logits, conf_logits = head(x, prev)
            if m.boost and b > 0:
                cls_logits = cls_logits + m.boost_r * prev  # F_l = f_l + r·F_{l-1}
            outs += [x, cls_logits] + ([conf_logits] if self.with_conf else [])
            prev = cls_logits
        outs.append(m.tail(x))
        return tuple(outs)


def part_names(count: int, with_conf: bool) -> list[str]:
    """The output names of ``CascadeParts`` with ``count`` branches."""
    names = []
    for b in range(count):
        names += [f"map{b}", f"cls{b}"] + ([f"conf{b}"] if with_conf else [])
    return [*names, LOGITS]


def export_parts(model: CascadeModel, input_size: int) -> onnx.ModelProto:
    """The ONNX graph of ``CascadeParts(model)`` (module docstring), checked by onnx.checker."""
    parts = CascadeParts(model.cpu().eval()).eval()
    names = part_names(len(model.heads), parts.with_conf)
    example = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            parts, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT],
            output_names=names, dynamic_shapes=({0: batch},), verbose=False,
        )  # fmt: skip
    buffer = io.BytesIO()
    program.save(buffer)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _ancestors(graph: onnx.GraphProto, outputs: list[str], stop: set[str]) -> set[str]:
    """Every value the ``outputs`` depend on, not looking past the ``stop`` values."""
    producer = {out: node for node in graph.node for out in node.output}
    seen, todo = set(), list(outputs)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in stop or name not in producer:
            continue
        node = producer[name]
        todo += [i for i in node.input if i]
        for attr in node.attribute:  # values a subgraph reads from this scope
            for sub in [attr.g, *attr.graphs]:
                todo += [i for n in sub.node for i in n.input if i]
    return seen


def _cut(extractor, full: onnx.ModelProto, outs: list[str], ins: list[str],
         optional: str | None = None) -> tuple[onnx.ModelProto, bool]:  # fmt: skip
    """The graph from ``ins`` (and ``optional`` if the outputs depend on it) to ``outs``,
    and whether it reads ``optional``."""
    stop = {*ins, optional} - {None}
    reached = _ancestors(full.graph, outs, stop)
    if INPUT in reached and INPUT not in ins:
        raise CalexError(f"{outs[0]} depends on the input images; the graph cannot be cut there")
    reads = optional is not None and optional in reached
    model = extractor.extract_model(ins + ([optional] if reads else []), outs)
    del model.opset_import[:]
    model.opset_import.extend(full.opset_import)
    model.ir_version = full.ir_version
    return model, reads


def cut_parts(full: onnx.ModelProto, count: int) -> Parts:
    """Extract the stage, tail and backbone graphs from ``export_parts``'s graph."""
    outputs = {o.name for o in full.graph.output}
    with_conf = "conf0" in outputs
    if set(part_names(count, with_conf)) != outputs:
        raise CalexError(f"the exported graph has outputs {sorted(outputs)}; re-export it")
    extractor = onnx.utils.Extractor(full)
    stages, reads_prev = [], []
    for b in range(count):
        outs = [f"map{b}", f"cls{b}"] + ([f"conf{b}"] if with_conf else [])
        ins, prev = ([INPUT], None) if b == 0 else ([f"map{b - 1}"], f"cls{b - 1}")
        stage, reads = _cut(extractor, full, outs, ins, prev)
        stages.append(stage)
        reads_prev.append(reads)
    tail = _cut(extractor, full, [LOGITS], [f"map{count - 1}"])[0]
    backbone = _cut(extractor, full, [LOGITS], [INPUT])[0]
    return Parts(stages, tail, backbone, reads_prev, with_conf)


def cut_segments_and_heads(full: onnx.ModelProto, count: int) -> tuple[list, list, list]:
    """The segment graphs (``images`` or ``map{b-1}`` -> ``map{b}``), the head graphs
    (``map{b}`` [, ``cls{b-1}``] -> ``cls{b}``[, ``conf{b}``]) and whether each head
    reads the previous logits: the parts ``measure_segments_onnx`` times apart."""
    with_conf = "conf0" in {o.name for o in full.graph.output}
    extractor = onnx.utils.Extractor(full)
    segments, heads, reads_prev = [], [], []
    for b in range(count):
        start = INPUT if b == 0 else f"map{b - 1}"
        segments.append(_cut(extractor, full, [f"map{b}"], [start])[0])
        outs = [f"cls{b}"] + ([f"conf{b}"] if with_conf else [])
        head, reads = _cut(extractor, full, outs, [f"map{b}"], f"cls{b - 1}" if b else None)
        heads.append(head)
        reads_prev.append(reads)
    return segments, heads, reads_prev
