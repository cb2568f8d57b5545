"""The early-exit cascade as ONE ONNX graph, composed from the cut parts (docs/deploy.md).

Level b runs stage b (segment and head) on the samples that reached it, computes the
exit signal and prediction as ``cascade.signals`` defines them (float64 where the
simulator is), and releases a sample when the signal exceeds the threshold of its
predicted class (``Greater``: strictly). The survivors' positions come from
``NonZero``; if there are any, an ``If`` node gathers their feature map and carried
state (previous logits, ZTW's log-probabilities, patience's run) and runs level b+1 in
its ``then`` branch, whose answers are scattered back (``ScatterND``); the ``else``
branch returns this level's answers, so computing stops when no sample is left. The
last level runs the tail: softmax probability and argmax of the classifier.

Inputs ``images`` (uint8 N×H×W×3); outputs ``pred`` (int64 N), ``exit`` (int64 N,
0..L-1 = branch, L = backbone) and ``confidence`` (float32 N), as ``CascadeModel``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calex_steps.cascade.signals import SIGNALS
from calex_steps.errors import CalexError

INPUT = "images"
LOGITS = "logits"
OUTPUTS = ("pred", "exit", "confidence")
META_KEY = "calex"


@dataclass
class ExitSpec:
    """What decides a release: the signal and the constants it reads (``CascadeModel``'s)."""

    signal: str
    thresholds: np.ndarray  # L×C float64
    temperatures: list[float] = field(default_factory=list)  # one per branch (logit signals)
    ens_a: np.ndarray | None = None  # L×L float32, row b: a of exit b (first b+1 entries)
    ens_b: np.ndarray | None = None  # L×C float32


@dataclass
class Parts:
    """The cut graphs: one per stage, the tail, the plain backbone; and what each stage reads."""

    stages: list[onnx.ModelProto]
    tail: onnx.ModelProto
    backbone: onnx.ModelProto
    reads_prev: list[bool]  # stage b reads cls{b-1}
    with_conf: bool


class _Scope:
    """One graph being written: its nodes, initializers, and unique value names."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits, self.count = prefix, [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def op(self, op: str, inputs: list[str], hint: str = "", outputs: int = 1, **attrs):
        """Append a node; its output name (or names, when ``outputs`` > 1)."""
        outs = [self.name(hint or op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def _rename_graph(graph: onnx.GraphProto, rename) -> None:
    """Rename every value and node of ``graph`` and its subgraphs in place."""
    for node in graph.node:
        node.input[:] = [rename(i) if i else i for i in node.input]
        node.output[:] = [rename(o) if o else o for o in node.output]
        node.name = rename(node.name or node.op_type)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.type in (5, 10) else []:
                _rename_graph(sub, rename)
                for v in [*sub.input, *sub.output]:
                    v.name = rename(v.name)
    for init in graph.initializer:
        init.name = rename(init.name)


def _splice(scope: _Scope, part: onnx.ModelProto, tag: str, feeds: dict[str, str]) -> dict:
    """Copy ``part``'s nodes and weights into ``scope``, its inputs read from ``feeds``
    (part input -> value of the scope); returns part output -> value of the scope."""
    graph = onnx.GraphProto()
    graph.CopyFrom(part.graph)
    inputs = {v.name for v in graph.input}
    if set(feeds) != inputs:
        raise CalexError(f"part {tag} has inputs {sorted(inputs)}, fed {sorted(feeds)}")

    def rename(name: str) -> str:
        return feeds.get(name, f"{tag}/{name}")

    _rename_graph(graph, rename)
    scope.nodes += list(graph.node)
    scope.inits += list(graph.initializer)
    return {v.name: f"{tag}/{v.name}" for v in part.graph.output}


def _argmax(s: _Scope, x: str) -> str:
    return s.op("ArgMax", [x], "pred", axis=1, keepdims=0)


def _filled(s: _Scope, like: str, value, elem: int, hint: str) -> str:
    """A 1-D tensor as long as ``like``, every entry ``value``."""
    fill = helper.make_tensor(hint, elem, [1], [value])
    return s.op("ConstantOfShape", [s.op("Shape", [like])], hint, value=fill)


def _reduce(s: _Scope, op: str, x: str, axis: int = 1) -> str:
    return s.op(op, [x, s.const(np.array([axis], np.int64), "axis")], op.lower(), keepdims=0)


def _decide(s: _Scope, b: int, spec: ExitSpec, cls: str, conf: str | None,
            state: dict) -> tuple[str, str, dict]:  # fmt: skip
    """(pred, signal float64, state for level b+1) of branch b, as ``module.exit_signal``."""
    new = {"prev": cls}
    if spec.signal == "branch":
        pred = _argmax(s, cls)
        at = s.op("Unsqueeze", [pred, s.const(np.array([1], np.int64), "axis")])
        sig = s.op("GatherElements", [s.op("Sigmoid", [conf]), at], axis=1)
        sig = s.op("Squeeze", [sig, s.const(np.array([1], np.int64), "axis")])
        return pred, s.op("Cast", [sig], "signal", to=TensorProto.DOUBLE), new
    if spec.signal == "ztw_ensemble":  # training.ztw.ensemble_outputs on the survivors
        logp = s.op("LogSoftmax", [cls], axis=1)
        logp = s.op("Unsqueeze", [logp, s.const(np.array([0], np.int64), "axis")])
        members = logp if b == 0 else s.op("Concat", [state["members"], logp], axis=0)
        weight = s.op("Exp", [s.const(spec.ens_a[b, : b + 1].reshape(-1, 1, 1), "ens_a")])
        ens = _reduce(s, "ReduceSum", s.op("Mul", [weight, members]), axis=0)
        ens = s.op("Div", [ens, s.const(np.float32(b + 1), "members")])
        ens = s.op("Add", [ens, s.const(spec.ens_b[b], "ens_b")])
        probs = s.op("Exp", [s.op("LogSoftmax", [ens], axis=1)])
        sig = s.op("Cast", [_reduce(s, "ReduceMax", probs)], "signal", to=TensorProto.DOUBLE)
        return _argmax(s, probs), sig, new | {"members": members}
    pred = _argmax(s, cls)
    new |= {"prev_pred": pred}
    if spec.signal == "patience":
        if b == 0:
            sig = _filled(s, pred, 1.0, TensorProto.DOUBLE, "signal")
        else:
            same = s.op("Equal", [pred, state["prev_pred"]])
            longer = s.op("Add", [state["run"], s.const(np.float64(1.0), "one")])
            sig = s.op("Where", [same, longer, s.const(np.float64(1.0), "one")], "signal")
        return pred, sig, new | {"run": sig}
    z = s.op("Div", [s.op("Cast", [cls], to=TensorProto.DOUBLE),
                     s.const(np.float64(spec.temperatures[b]), "temperature")])  # fmt: skip
    logp = s.op("LogSoftmax", [z], axis=1)
    if spec.signal == "max_softmax":
        return pred, s.op("Exp", [_reduce(s, "ReduceMax", logp)], "signal"), new
    if spec.signal == "entropy":
        minus_h = _reduce(s, "ReduceSum", s.op("Mul", [s.op("Exp", [logp]), logp]))
        scaled = s.op("Div", [minus_h, s.const(np.float64(math.log(spec.thresholds.shape[1])))])
        return pred, s.op("Add", [s.const(np.float64(1.0), "one"), scaled], "signal"), new
    if spec.signal == "top2_gap":
        top = s.op("TopK", [s.op("Exp", [logp]), s.const(np.array([2], np.int64), "k")],
                   outputs=2, axis=1)[0]  # fmt: skip
        first, second = (s.op("Gather", [top, s.const(np.int64(i), "i")], axis=1) for i in (0, 1))
        return pred, s.op("Sub", [first, second], "signal"), new
    raise CalexError(f"exit signal '{spec.signal}' is not one of {list(SIGNALS)}")


OUT_TYPES = (TensorProto.INT64, TensorProto.INT64, TensorProto.FLOAT)


def _typed(names: list[str], shape=None) -> list[onnx.ValueInfoProto]:
    """Value infos of (pred, exit, confidence)-typed outputs named ``names``."""
    return [helper.make_tensor_value_info(n, t, shape)
            for n, t in zip(names, OUT_TYPES, strict=True)]  # fmt: skip


def _level(s: _Scope, b: int, parts: Parts, spec: ExitSpec, x: str,
           state: dict) -> tuple[str, str, str]:  # fmt: skip
    """Append level ``b`` to ``s`` (module docstring); its (pred, exit, confidence)."""
    count = len(parts.stages)
    if b == count:  # the tail: the classifier's softmax probability and argmax
        logits = _splice(s, parts.tail, "tail", {parts.tail.graph.input[0].name: x})["logits"]
        probs = s.op("Softmax", [logits], axis=1)
        pred = _argmax(s, probs)
        exit_b = _filled(s, pred, count, TensorProto.INT64, "exit")
        return pred, exit_b, _reduce(s, "ReduceMax", probs)
    stage = parts.stages[b]
    names = [v.name for v in stage.graph.input]
    feeds = {names[0]: x} | ({names[1]: state["prev"]} if len(names) > 1 else {})
    out = _splice(s, stage, f"stage{b}", feeds)
    conf = out.get(f"conf{b}")
    pred, sig, carried = _decide(s, b, spec, out[f"cls{b}"], conf, state)
    released = s.op("Greater", [sig, s.op("Gather", [s.const(spec.thresholds[b], "thr"), pred])])
    confidence = s.op("Cast", [sig], "confidence", to=TensorProto.FLOAT)
    exit_b = _filled(s, pred, b, TensorProto.INT64, "exit")
    stay = s.op("NonZero", [s.op("Not", [released])])
    stay = s.op("Reshape", [stay, s.const(np.array([-1], np.int64), "flat")], "stay")
    any_left = s.op("Greater", [s.op("Size", [stay]), s.const(np.int64(0), "zero")])
    # then: gather the survivors, run the next level, scatter its answers back
    inner = _Scope(f"L{b + 1}/")
    if not (b + 1 < count and parts.reads_prev[b + 1]):
        carried.pop("prev")  # the next stage does not read the previous logits
    nxt = {k: inner.op("Gather", [v, stay], k, axis=1 if k == "members" else 0)
           for k, v in carried.items()}  # fmt: skip
    nxt_x = inner.op("Gather", [out[f"map{b}"], stay], "map", axis=0)
    answers = _level(inner, b + 1, parts, spec, nxt_x, nxt)
    at = inner.op("Unsqueeze", [stay, inner.const(np.array([1], np.int64), "axis")])
    mine = (pred, exit_b, confidence)
    merged = [inner.op("ScatterND", [m, at, a], k)
              for m, a, k in zip(mine, answers, OUTPUTS, strict=True)]  # fmt: skip
    then = helper.make_graph(inner.nodes, f"level{b + 1}", [], _typed(merged),
                             initializer=inner.inits)  # fmt: skip
    kept = [s.name(f"kept_{k}") for k in OUTPUTS]
    copies = [helper.make_node("Identity", [m], [k]) for m, k in zip(mine, kept, strict=True)]
    orelse = helper.make_graph(copies, f"stop{b + 1}", [], _typed(kept))
    return tuple(s.op("If", [any_left], "answer", outputs=3, then_branch=then,
                      else_branch=orelse))  # fmt: skip


def compose(parts: Parts, spec: ExitSpec, meta: dict) -> onnx.ModelProto:
    """The cascade as one graph (module docstring), ``meta`` stored as metadata ``calex``."""
    count = len(parts.stages)
    if spec.thresholds.shape[0] != count:
        raise CalexError(f"{spec.thresholds.shape[0]} threshold rows for {count} branches")
    if spec.signal == "branch" and not parts.with_conf:
        raise CalexError("the branch exit signal needs the conf logits; re-export the parts")
    top = _Scope("")
    answers = _level(top, 0, parts, spec, INPUT, {})
    top.nodes += [helper.make_node("Identity", [a], [o])
                  for a, o in zip(answers, OUTPUTS, strict=True)]  # fmt: skip
    image = parts.stages[0].graph.input[0]
    outputs = _typed(list(OUTPUTS), ["batch"])
    graph = helper.make_graph(top.nodes, "calex_cascade", [image], outputs, top.inits)
    first = parts.stages[0]
    model = helper.make_model(graph, opset_imports=list(first.opset_import),
                              producer_name="calex")  # fmt: skip
    model.ir_version = first.ir_version
    seen = set()
    for part in [*parts.stages, parts.tail]:
        for fn in part.functions:
            if (fn.domain, fn.name) not in seen:
                seen.add((fn.domain, fn.name))
                model.functions.append(fn)
    helper.set_model_props(model, {META_KEY: json.dumps(meta, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model
