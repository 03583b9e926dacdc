"""Turn a model into a traced graph of classified ops.

deconvviz traces the model once with ``torch.fx`` (modules that are single ops stay leaves), keeps
which graph node is the output of every module path, and classifies every node into an
:class:`Op` (a kind plus its parameters). Recording, the deconvnet and the receptive-field
geometry all read these ops, so every part of deconvviz agrees on what each op is.

The user's model is never changed: the traced ``GraphModule`` shares the model's submodules.
"""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import UnsupportedOpError

__all__ = ["Op", "TracedModel", "trace"]

# Module types that are one op each: tracing stops at them (subclasses are traced through,
# since they may override forward).
_RELU = (nn.ReLU,)
_IDENTITY_MODULES = {
    nn.Dropout: "dropout", nn.Dropout2d: "dropout", nn.AlphaDropout: "dropout",
    nn.LocalResponseNorm: "local response norm (identity, as in the paper)",
    nn.Identity: "identity",
}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      torch.unflatten}
_IDENTITY_METHODS = {"contiguous", "clone", "float"}
_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, getattr(F, "relu_", F.relu)}
_MAXPOOL_FUNCTIONS = {F.max_pool2d, torch.max_pool2d}
_ADD = {operator.add, torch.add, operator.sub, torch.sub}


@dataclass
class Op:
    """One forward op of the traced graph, as deconvviz understands it.

    Attributes:
        node: the ``torch.fx`` node.
        kind: ``input``, ``relu``, ``maxpool``, ``conv``, ``linear``, ``batchnorm``,
            ``identity``, ``avgpool``, ``adaptive_avgpool``, ``reshape``, ``cat``, ``add``,
            ``scale``, ``transpose`` (any other linear op), ``constant`` (no tensor from the
            input flows through it) or ``unsupported``.
        where: the module path it belongs to (``features.3``), or the node name.
        label: a short human description (``Conv2d(3, 64, k=3, s=1, p=1)``).
        module: the leaf module, for module calls.
        params: kind-specific parameters (kernel, stride, padding, ... , factor, dim).
        inputs: the graph nodes whose tensors flow into this op (path inputs only).
    """

    node: fx.Node
    kind: str
    where: str
    label: str
    module: Optional[nn.Module] = None
    params: Dict[str, Any] = field(default_factory=dict)
    inputs: List[fx.Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.name


class _PathTracer(fx.Tracer):
    """A tracer that remembers which node each module call (leaf or not) returned."""

    def __init__(self) -> None:
        super().__init__()
        self.module_outputs: Dict[str, List[fx.Node]] = defaultdict(list)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in _KNOWN_LEAVES:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, fx.Proxy):
            self.module_outputs[self.path_of_module(m)].append(out.node)
        return out


_KNOWN_LEAVES = {nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.Flatten, *_IDENTITY_MODULES}


@dataclass
class TracedModel:
    """A model's traced graph, with every node classified.

    Attributes:
        model: the user's module (unchanged).
        graph_module: the ``torch.fx.GraphModule`` sharing the model's submodules.
        ops: one :class:`Op` per graph node, keyed by node name, in graph order.
        module_outputs: module path -> the node(s) its calls returned (several when a module
            is called more than once).
        input_node: the placeholder of the image batch.
        output_node: the node the model returns.
    """

    model: nn.Module
    graph_module: fx.GraphModule
    ops: Dict[str, Op]
    module_outputs: Dict[str, List[fx.Node]]
    input_node: fx.Node
    output_node: fx.Node

    def path_to_input(self, target: fx.Node) -> List[Op]:
        """The ops between the input and ``target`` (inclusive), in forward order: the ones
        the deconvnet runs through on its way down from ``target``."""
        ancestors = set()
        stack = [target]
        while stack:
            node = stack.pop()
            if node in ancestors:
                continue
            ancestors.add(node)
            stack.extend(self.ops[node.name].inputs)
        return [op for op in self.ops.values() if op.node in ancestors]


def trace(model: nn.Module) -> TracedModel:
    """Trace ``model`` with ``torch.fx`` and classify each op.

    Raises:
        UnsupportedOpError: when the model cannot be traced symbolically (for example when its
            forward branches on tensor values).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    tracer = _PathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many kinds of errors; all mean "not traceable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedOpError(
            f"deconvviz cannot trace {type(model).__name__} with torch.fx ({first}); the "
            f"forward must not branch on tensor values") from None
    graph_module = fx.GraphModule(model, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise UnsupportedOpError(f"{type(model).__name__}.forward takes no input")
    input_node = placeholders[0]
    output_node = next(n for n in graph.nodes if n.op == "output")
    ops: Dict[str, Op] = {}
    from_input = {input_node}
    for node in graph.nodes:
        op = _classify(node, graph_module, from_input, type(model).__name__)
        if op.inputs or node is input_node:
            from_input.add(node)
        ops[node.name] = op
    returned = output_node.args[0]
    tracer.module_outputs[""] = [returned] if isinstance(returned, fx.Node) else []
    return TracedModel(model, graph_module, ops, dict(tracer.module_outputs), input_node,
                       output_node)


def _where(node: fx.Node, root: str) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = getattr(cls, "__name__", str(cls))
        return f"{path} ({cls_name}.forward)" if path else f"{cls_name}.forward"
    return f"{root}.forward"


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _flat_nodes(args) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _classify(node: fx.Node, gm: fx.GraphModule, from_input: set, root: str) -> Op:
    inputs = [n for n in _flat_nodes((node.args, node.kwargs)) if n in from_input]
    where = _where(node, root)
    if node.op == "placeholder":
        return Op(node, "input", "input", "input image")
    if node.op == "output":
        return Op(node, "constant", "output", "output", inputs=inputs)
    if not inputs:
        return Op(node, "constant", where, str(node.target))
    if node.op == "call_module":
        return _classify_module(node, gm.get_submodule(str(node.target)), where, inputs)
    if node.op == "call_function":
        return _classify_function(node, where, inputs)
    if node.op == "call_method":
        return _classify_method(node, where, inputs)
    return Op(node, "unsupported", where, f"{node.op} {node.target}", inputs=inputs)


def _pool_params(kernel, stride, padding, dilation, ceil_mode) -> Dict[str, Any]:
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, [], ()) else kernel
    return dict(kernel=kernel, stride=stride, padding=_pair(padding), dilation=_pair(dilation),
                ceil_mode=bool(ceil_mode))


def _classify_module(node, m: nn.Module, where: str, inputs) -> Op:
    def op(kind, label, **params):
        return Op(node, kind, where, label, module=m, params=params, inputs=inputs)

    t = type(m)
    if t in _RELU:
        return op("relu", "ReLU")
    if t is nn.MaxPool2d:
        if m.return_indices:
            return op("unsupported", "MaxPool2d(return_indices=True)")
        p = _pool_params(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        return op("maxpool", _describe("MaxPool2d", p), **p)
    if t is nn.Conv2d:
        p = dict(kernel=_pair(m.kernel_size), stride=_pair(m.stride), dilation=_pair(m.dilation),
                 padding=m.padding if isinstance(m.padding, str) else _pair(m.padding),
                 groups=m.groups)
        if m.padding_mode != "zeros":
            return op("unsupported", f"Conv2d(padding_mode={m.padding_mode!r})")
        groups = f", groups={m.groups}" if m.groups > 1 else ""
        shape = _describe("", p)[1:-1]
        return op("conv", f"Conv2d({m.in_channels}, {m.out_channels}, {shape}{groups})", **p)
    if t is nn.Linear:
        return op("linear", f"Linear({m.in_features}, {m.out_features})")
    if t in (nn.BatchNorm2d, nn.BatchNorm1d):
        return op("batchnorm", f"{t.__name__}({m.num_features})")
    if t in _IDENTITY_MODULES:
        return op("identity", f"{t.__name__}: {_IDENTITY_MODULES[t]}")
    if t is nn.AvgPool2d:
        p = _pool_params(m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)
        return op("avgpool", _describe("AvgPool2d", p), **p)
    if t is nn.AdaptiveAvgPool2d:
        return op("adaptive_avgpool", f"AdaptiveAvgPool2d({m.output_size})")
    if t is nn.Flatten:
        return op("reshape", "Flatten")
    return op("unsupported", t.__name__)


def _describe(name: str, p: Dict[str, Any]) -> str:
    parts = [f"k={_short(p['kernel'])}", f"s={_short(p['stride'])}"]
    pad = p.get("padding")
    if pad not in ((0, 0), 0, None):
        parts.append(f"p={_short(pad)}")
    if p.get("dilation", (1, 1)) != (1, 1):
        parts.append(f"d={_short(p['dilation'])}")
    if p.get("ceil_mode"):
        parts.append("ceil")
    return f"{name}({', '.join(parts)})"


def _short(v):
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _constant_factor(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _classify_function(node, where, inputs) -> Op:
    f = node.target
    name = getattr(f, "__name__", str(f))

    def op(kind, label, **params):
        return Op(node, kind, where, label, params=params, inputs=inputs)

    if f in _RELU_FUNCTIONS:
        return op("relu", f"{name} (functional)")
    if f in _MAXPOOL_FUNCTIONS:
        if _arg(node, 6, "return_indices", False):
            return op("unsupported", "max_pool2d(return_indices=True)")
        p = _pool_params(_arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                         _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1),
                         _arg(node, 5, "ceil_mode", False))
        return op("maxpool", _describe("max_pool2d", p), **p)
    if f is F.avg_pool2d:
        p = _pool_params(_arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                         _arg(node, 3, "padding", 0), 1, _arg(node, 4, "ceil_mode", False))
        return op("avgpool", _describe("avg_pool2d", p), **p)
    if f is F.adaptive_avg_pool2d:
        return op("adaptive_avgpool", f"adaptive_avg_pool2d({_arg(node, 1, 'output_size')})")
    if f in (F.dropout, F.dropout2d):
        return op("identity", f"{name}: dropout")
    if f is F.local_response_norm:
        return op("identity", "local_response_norm (identity, as in the paper)")
    if f in _RESHAPE_FUNCTIONS:
        return op("reshape", name)
    if f is torch.cat or f is torch.concat:
        return op("cat", "cat", dim=_arg(node, 1, "dim", 0))
    if f in _ADD:
        return _classify_add(node, where, inputs, subtract=f in (operator.sub, torch.sub))
    if f in (operator.mul, torch.mul, operator.truediv, torch.div):
        return _classify_scale(node, where, inputs, divide=f in (operator.truediv, torch.div))
    if f is operator.neg:
        return op("scale", "neg", factor=-1.0)
    if f in (operator.getitem, F.pad, torch.mean):
        if f is F.pad and _arg(node, 2, "mode", "constant") != "constant":
            return op("unsupported", f"pad(mode={_arg(node, 2, 'mode')!r})")
        return op("transpose", name)
    return op("unsupported", f"{getattr(f, '__module__', '') or ''}.{name}".lstrip("."))


def _classify_method(node, where, inputs) -> Op:
    m = node.target

    def op(kind, label, **params):
        return Op(node, kind, where, label, params=params, inputs=inputs)

    if m in ("relu", "relu_"):
        return op("relu", f".{m}()")
    if m in _RESHAPE_METHODS:
        return op("reshape", f".{m}()")
    if m in _IDENTITY_METHODS:
        return op("identity", f".{m}()")
    if m in ("add", "add_", "sub", "sub_"):
        return _classify_add(node, where, inputs, subtract=m.startswith("sub"))
    if m in ("mul", "mul_", "div", "div_"):
        return _classify_scale(node, where, inputs, divide=m.startswith("div"))
    if m == "mean":
        return op("transpose", ".mean()")
    return op("unsupported", f"Tensor.{m}")


def _classify_add(node, where, inputs, subtract: bool) -> Op:
    alpha = _constant_factor(node.kwargs.get("alpha", 1)) or 1.0
    signs = []
    for i, a in enumerate(node.args[:2]):
        if a in inputs:  # anything else is a constant shift, which vanishes on the way down
            signs.append((a, 1.0 if i == 0 else (-alpha if subtract else alpha)))
    label = ("sub" if subtract else "add") + (
        " (both branches)" if len(signs) > 1 else " of a constant (the shift vanishes)")
    return Op(node, "add", where, label, params={"signs": signs}, inputs=inputs)


def _classify_scale(node, where, inputs, divide: bool) -> Op:
    a, b = (node.args + (None, None))[:2]
    if len(inputs) != 1 or (divide and b in inputs):
        name = "div" if divide else "mul"
        return Op(node, "unsupported", where, f"{name} of two tensors from the input",
                  inputs=inputs)
    other = b if a in inputs else a
    factor: Any
    if isinstance(other, fx.Node):
        if other.op != "get_attr":
            return Op(node, "unsupported", where, "mul by a computed tensor", inputs=inputs)
        factor = ("attr", other.target)
    else:
        factor = _constant_factor(other)
        if factor is None:
            return Op(node, "unsupported", where, f"mul by {other!r}", inputs=inputs)
        if divide:
            factor = 1.0 / factor
    label = ("div" if divide else "mul") + " by a constant"
    return Op(node, "scale", where, label, params={"factor": factor, "divide": divide},
              inputs=inputs)
