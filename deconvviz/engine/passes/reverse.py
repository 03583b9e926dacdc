"""The reverse loop: one pass down the graph, shared by the full-size pass and the cone; and
what a pass is (:class:`ReversePass`: its steps, printable, and whether the cone applies).

:func:`run` walks the ops from the projected layer down to the input, hands the signal on
each op's output to that op's rule (:mod:`deconvviz.engine.catalogue.rules`), and adds up what arrives
at each input (a tensor used by several ops receives the sum of their signals). *Where* the
signals live is the context's business: :class:`FullSize` holds whole maps; the cone's
context (:mod:`deconvviz.engine.passes.cone`) holds each seed's window of every map and swaps in the
rules' window versions. The method (a :class:`~deconvviz.engine.catalogue.rules.RuleSet`) decides which
rule each op gets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch.fx as fx
from torch import Tensor

from ...errors import UnsupportedOpError
from ..catalogue.methods import DECONVNET
from ..catalogue.ops import conv_weight
from ..catalogue.rules import RuleSet
from .graph import Op, TracedModel
from .layout import permute_dims
from .recording import Recording

__all__ = ["FullSize", "run", "ReverseStep", "ReversePass", "refuse", "supported_rule",
           "batch_axes"]


@dataclass(frozen=True)
class ReverseStep:
    """One step of the reverse pass: the forward op it undoes and the rule it applies."""

    op: Op
    rule: str  # the rule's one-line description

    def __str__(self) -> str:
        return f"{self.op.where:<44} {self.op.label:<36} {self.rule}"




@dataclass(frozen=True)
class ReversePass:
    """A method's reverse pass below one layer: its steps, from the layer down to the input.

    ``print(net.reverse_pass("conv3"))`` shows one line per step.
    """

    layer: str
    path: str
    steps: Tuple[ReverseStep, ...]
    # BatchNorm node -> the convolution below it that carries its scale (see fold_batchnorms)
    folded: Dict[str, str] = field(default_factory=dict)
    method: RuleSet = DECONVNET
    # the first op on the way down through which no local window passes: from there on, the
    # receptive-field cone is the whole image and every projection runs full size
    cone_stop: Optional[Op] = None
    # why the cone is not used, where the op alone does not say it (a ViT's tokens)
    cone_reason: Optional[str] = None

    @property
    def ops(self) -> List[Op]:
        """The forward ops in reverse order, from the layer down to the input."""
        return [step.op for step in self.steps]

    def __str__(self) -> str:
        title = self.method.title  # "LRP ε-z⁺-flat" keeps its capitals
        head = f"{title[:1].upper() + title[1:]} from {self.layer!r}" + (
            f" ({self.path})" if self.path != self.layer else "") + f": {len(self.steps)} steps"
        return "\n".join([head] + [f"  {s}" for s in self.steps] + ["  -> input pixels",
                                                                     self.cone_note])

    @property
    def cone_note(self) -> str:
        """Whether single activations (``mode="max"``) can be projected in their
        receptive-field cone, and if not, which op keeps them full size."""
        if self.cone_stop is None:
            return ("Receptive-field cone: single activations (mode='max') are projected in "
                    "their cone where it is smaller than the maps")
        if self.cone_reason is not None:
            return f"Receptive-field cone: not used; {self.cone_reason}"
        op = self.cone_stop
        return (f"Receptive-field cone: not used; {op.label} at {op.where} mixes positions "
                f"or has no local rule, so every projection runs the full-size pass")

    def __len__(self) -> int:
        return len(self.steps)


class FullSize:
    """The context of a full-size reverse pass: K seeds for each of N images, whole maps.

    Reverse rules read the recording, shapes and weights through it.
    """

    def __init__(self, rules: RuleSet, rec: Recording, n: int, k: int, traced: TracedModel,
                 folded: Dict[str, str]):
        self.rules, self.rec, self.n, self.k, self.traced = rules, rec, n, k, traced
        # BatchNorm node name -> the convolution below it that carries its scale
        self.folded = folded

    def weight(self, op: Op) -> Tensor:
        """The convolution's weight (times a BatchNorm scale folded into it)."""
        return conv_weight(op, self.folded, self.traced)

    def shape(self, node) -> Tuple[int, ...]:
        """Recorded shape of ``node`` with the batch dimension widened to N*K signals."""
        s, axis = list(self.rec.shapes[node.name]), batch_axes(self.traced).get(node.name, 0)
        if s[axis] != self.n:
            raise UnsupportedOpError(f"node {node.name!r} changes the batch dimension; a "
                                     f"reverse pass needs ops that keep images apart")
        s[axis] = self.n * self.k
        return tuple(s)

    def input_of(self, op: Op) -> Tensor:
        """The op's recorded forward input, laid out like the signals (each image's input
        repeated for its K seeds). Only for rules that declare ``needs={"input"}``."""
        axis = batch_axes(self.traced).get(op.inputs[0].name, 0) if op.inputs else 0
        return self.rec.inputs[op.name].repeat_interleave(self.k, dim=axis)

    def arguments_of(self, op: Op) -> Dict:
        """Every tensor argument of the op at its recorded forward point, graph node ->
        value: those from the image laid out like the signals, the others as recorded. Only
        for rules that declare ``needs={"arguments"}``."""
        values = {node: self.argument(op, node) for node in op.inputs}
        for node in _nodes((op.node.args, op.node.kwargs)):
            if node not in values:
                values[node] = self.rec.constants[node.name]
        return values

    def argument(self, op: Op, node) -> Tensor:
        """The recorded value of the op's argument ``node`` (from the image), laid out like
        the signals."""
        return _repeat(self.rec.arguments[op.name][node.name], self.k,
                       batch_axes(self.traced).get(node.name, 0))

    def enter(self, op: Op) -> None:
        """Called before ``op``'s rule runs (the cone sets the op's windows here)."""

    def reverse(self, op: Op, signal: Tensor):
        return self.rules.rule_of(op).reverse(op, signal, self)

    def place(self, op: Op, node, contribution: Tensor) -> Tensor:
        """Bring a contribution to ``node`` into the layout ``node``'s signal is kept in."""
        return contribution


def _repeat(value, k: int, axis: int = 0):
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat(v, k, axis) for v in value)
    return value.repeat_interleave(k, dim=axis) if k > 1 else value


def batch_axes(traced: TracedModel) -> Dict[str, int]:
    """Node name -> the axis of its value that holds the images: 0, but where a ``permute``,
    a ``transpose`` or an ``unbind`` moved it (timm's attention puts q, k and v first:
    ``qkv.reshape(B, T, 3, h, d).permute(2, 0, 3, 1, 4)``), so that a recorded value is
    repeated for its K seeds along its own batch axis. Found once per traced model."""
    found = traced.__dict__.get("_batch_axes")
    if found is not None:
        return found
    found = {}
    for op in traced.ops.values():
        axis = found.get(op.inputs[0].name, 0) if op.inputs else 0
        dims, node = permute_dims(op), op.node
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if dims is not None:
            axis = dims.index(axis) if axis in dims else 0
        elif name in ("transpose", "swapaxes", "swapdims") and len(node.args) >= 3 \
                and all(isinstance(d, int) and d >= 0 for d in node.args[1:3]):
            a, b = node.args[1:3]
            axis = b if axis == a else a if axis == b else axis
        elif name == "unbind":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            axis = axis - 1 if isinstance(dim, int) and 0 <= dim < axis else axis
        elif axis and op.kind not in ("identity", "transpose", "field"):
            axis = 0  # an op that regroups the values (a reshape): the images first again
        found[op.name] = axis
    traced.__dict__["_batch_axes"] = found
    return found


def _nodes(args) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _add(a, b):
    """Signals arriving at one node add up (per item for a node holding a tuple)."""
    if isinstance(a, dict):
        return {i: a[i] + b[i] if i in a and i in b else a.get(i, b.get(i))
                for i in dict.fromkeys([*a, *b])}
    return a + b


def run(ops_down: Sequence[Op], start: Dict[str, Tensor], ctx: FullSize) -> Dict[str, Tensor]:
    """Run the reverse pass.

    Args:
        ops_down: the ops in reverse topological order (from the layer down to the input).
        start: node name -> the signal seeded there.
        ctx: where the signals live and which rules apply.

    Returns:
        node name -> the signal that reached it and was not consumed (the input's, mainly).
    """
    signals = dict(start)
    for op in ops_down:
        signal = signals.pop(op.name, None)
        if signal is None:
            continue
        ctx.enter(op)
        for node, contribution in ctx.reverse(op, signal):
            contribution = ctx.place(op, node, contribution)
            if node.name in signals:
                signals[node.name] = _add(signals[node.name], contribution)
            else:
                signals[node.name] = contribution
    return signals


# -- a method's rules on the path: refused with one error naming the blockers ---------------
def refuse(method: RuleSet, missing: List[Op], layer: str) -> None:
    """One error naming the first op on the way down without a rule, and every other
    kind of op on the path that has none, so that a model's real blockers show at once."""
    first = missing[0]
    counts: Dict[str, int] = {}
    for op in missing[1:]:
        counts[op.label] = counts.get(op.label, 0) + 1
    also = "; ".join(f"{label} ({n}x)" if n > 1 else label
                     for label, n in counts.items() if label != first.label)
    fallback = method.fallback
    why = (" (its result is an index or an integer: it does not depend differentiably on "
           "its input, so no signal can pass through it)"
           if fallback is not None and fallback.when is not None
           and not fallback.when(first) else "")
    if first.params.get("refused"):
        why = f" ({first.params['refused']})"
    raise UnsupportedOpError(
        f"no {method.title} rule for {first.label} at {first.where} (graph node "
        f"{first.name!r}){why} on the path from {layer!r} down to the input"
        + (f"; further down, no rule for: {also}" if also else "")
        + "; deconvviz will not fall back to a plain gradient. Project from a layer "
          "below it, or rewrite it with supported ops")

def supported_rule(method: RuleSet, op: Op, layer: str):
    rule = method.rule_of(op)
    if rule is None:
        raise UnsupportedOpError(
            f"no {method.title} rule for {op.label} at {op.where} (graph node "
            f"{op.name!r}) on the path from {layer!r} down to the input; deconvviz will "
            f"not fall back to a plain gradient. Project from a layer below it, or "
            f"rewrite it with supported ops")
    if rule.check is not None:
        rule.check(op, layer)
    return rule
