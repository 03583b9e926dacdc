"""Turn a model into a traced graph of classified ops.

deconvviz traces the model once with ``torch.fx`` (modules that some rule claims stay leaves),
keeps which graph node is the output of every module path, and classifies every node into an
:class:`Op` (a kind plus its parameters) by asking the registered rules
(:mod:`deconvviz.engine.catalogue.ops`) which of them claims it. Recording, the reverse pass and the
receptive-field geometry all read these ops, so every part of deconvviz agrees on what each
op is.

The user's model is never changed: the traced ``GraphModule`` shares the model's submodules.
"""
from __future__ import annotations

import inspect
import os
import re
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.fx as fx
from torch import nn

from ...errors import UnsupportedOpError, first_line
from ..catalogue import norms as _norm_rules  # noqa: F401  (LayerNorm, GroupNorm, RMSNorm)
from ..catalogue import ops as _builtin_rules  # noqa: F401  (registers the built-in rules)
from ..catalogue import pointwise as _pointwise_rules  # noqa: F401  (activations, products, the rest)
from ..catalogue.ops_common import NAMED_TUPLE_FIELDS
from ..catalogue.rules import Unsupported, claiming_rule, lookup_tables

REFUSED = "deconvviz_refused"  # node.meta key (engine/passes/capture.py): why no rule may take it

__all__ = ["Op", "TracedModel", "trace"]


@dataclass
class Op:
    """One forward op of the traced graph, as deconvviz understands it.

    Attributes:
        node: the ``torch.fx`` node.
        kind: a registered rule's kind (``relu``, ``maxpool``, ``conv``, ...), ``input``,
            ``constant`` (no tensor from the input flows through it) or ``unsupported``.
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


@dataclass
class Call:
    """What a rule's ``parse`` sees of one call: its node, kind of call and arguments."""

    node: fx.Node
    kind: str  # "module", "function" or "method"
    inputs: List[fx.Node]
    module: Optional[nn.Module] = None
    root: Optional[fx.GraphModule] = None  # to look up the modules other nodes call

    @property
    def target(self):
        return self.node.target

    @property
    def name(self) -> str:
        if self.kind == "module":
            return type(self.module).__name__
        return self.node.target if self.kind == "method" else \
            getattr(self.node.target, "__name__", str(self.node.target))

    @property
    def default_label(self) -> str:
        return {"module": self.name, "function": self.name, "method": f".{self.name}()"}[
            self.kind]

    def arg(self, index: int, name: str, default=None):
        """The call's argument by position or keyword."""
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(name, default)


class _PathTracer(fx.Tracer):
    """A tracer that remembers which node each module call (leaf or not) returned."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True  # errors name the line of the user's forward
        self.module_outputs: Dict[str, List[fx.Node]] = defaultdict(list)
        self.tuple_outputs: Dict[str, int] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in lookup_tables()[0]:  # modules some rule claims are single ops
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        if isinstance(out, fx.Proxy):
            self.module_outputs[path].append(out.node)
        elif isinstance(out, (tuple, list)) and any(isinstance(o, fx.Proxy) for o in out):
            # A module returning several tensors: each is a layer of its own, path[i].
            self.tuple_outputs[path] = len(out)
            for i, o in enumerate(out):
                if isinstance(o, fx.Proxy):
                    self.module_outputs[f"{path}[{i}]"].append(o.node)
        return out


@dataclass
class TracedModel:
    """A model's traced graph, with every node classified.

    Attributes:
        model: the user's module (unchanged; held weakly, as ``model_ref``).
        graph_module: the ``torch.fx.GraphModule`` sharing the model's submodules.
        ops: one :class:`Op` per graph node, keyed by node name, in graph order.
        module_outputs: module path -> the node(s) its calls returned (several when a module
            is called more than once).
        input_node: the placeholder of the image batch.
        output_node: the node the model returns.
        tuple_outputs: module path -> how many values it returns, for modules returning a
            tuple or list (each value is the layer ``path[i]``).
        capture: how the graph was captured: ``"torch.fx"`` (symbolic tracing), or
            ``"torch.export"`` where that fails (:mod:`deconvviz.engine.passes.capture`).
    """

    model_ref: "weakref.ReferenceType[nn.Module]"
    graph_module: fx.GraphModule
    ops: Dict[str, Op]
    module_outputs: Dict[str, List[fx.Node]]
    input_node: fx.Node
    output_node: fx.Node
    tuple_outputs: Dict[str, int] = field(default_factory=dict)
    capture: str = "torch.fx"  # or "torch.export", where fx could not trace the forward
    # input size -> node name -> the axis holding its channels (engine.recording.channel_axes)
    channel_axes: Optional[Dict[Any, Dict[str, Optional[int]]]] = None

    # layer measurements per input size (engine.layers.measure), shared by every Projector
    measured: Dict[Any, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        """The user's module (held weakly: a trace never keeps a model alive)."""
        model = self.model_ref()
        if model is None:
            raise ReferenceError("the traced model no longer exists")
        return model

    def path_to_input(self, target: fx.Node,
                      reaches: Optional[Callable[[Op], List[fx.Node]]] = None) -> List[Op]:
        """The ops between the input and ``target`` (inclusive), in forward order: the ones
        a reverse pass runs through on its way down from ``target``.

        ``reaches(op)``: the inputs a method's reverse of ``op`` sends a signal to (by
        default all of them; a gate's branch is not reached by the deconvnet)."""
        ancestors = set()
        stack = [target]
        while stack:
            node = stack.pop()
            if node in ancestors:
                continue
            ancestors.add(node)
            op = self.ops[node.name]
            stack.extend(op.inputs if reaches is None else reaches(op))
        return [op for op in self.ops.values() if op.node in ancestors]


# model -> (its structure when traced, the trace): a model is traced once while its structure
# stays (every Projector, scan and analysis of the same model shares the trace). Held weakly,
# and the trace holds the model weakly, so a model the caller drops is freed with its trace.
_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """What a trace depends on besides the forward's code: each module object (a replaced
    module is a new one) with its class, mode and any forward patched onto it, and each
    parameter and buffer object (a graph reads some of them directly)."""
    modules = tuple((name, id(m), type(m), m.training, id(m.__dict__.get("forward")))
                    for name, m in model.named_modules(remove_duplicate=False))
    tensors = tuple((name, id(t)) for name, t in
                    [*model.named_parameters(remove_duplicate=False),
                     *model.named_buffers(remove_duplicate=False)])
    return modules, tensors


def trace(model: nn.Module) -> TracedModel:
    """Trace ``model`` with ``torch.fx`` and classify each op: once per model, while its
    modules, parameters and buffers stay the same objects.

    Raises:
        UnsupportedOpError: when the model cannot be traced symbolically (for example when its
            forward branches on tensor values).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    structure = _structure(model)
    known = _TRACES.get(model)
    if known is not None and known[0] == structure:
        return known[1]
    traced = _trace(model)
    _TRACES[model] = (structure, traced)
    return traced


def optional_defaults(model: nn.Module) -> Optional[Dict[str, Any]]:
    """Every parameter of ``model.forward`` after the image that has a default, bound to it:
    the trace follows the forward as ``model(x)`` runs it (``extra=None`` stays ``None``,
    its branch is not taken) instead of making each a second input."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    bound = {p.name: p.default for p in parameters[1:]
             if p.default is not inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return bound or None


def _trace(model: nn.Module) -> TracedModel:
    tracer = _PathTracer()
    capture = "torch.fx"
    try:
        graph = tracer.trace(model, concrete_args=optional_defaults(model))
        graph_module = fx.GraphModule(model, graph)
        module_outputs = tracer.module_outputs
    except Exception as fx_error:  # fx raises many kinds of errors; all mean "not traceable"
        # torch.export (non-strict) runs the forward on fake tensors: it handles len(),
        # loops over chunks and branches on sizes, which symbolic tracing cannot.
        from .capture import export_graph, user_frame

        try:
            graph_module, found = export_graph(model)
        except Exception as export_error:
            line = user_frame(export_error.__traceback__) or \
                user_frame(fx_error.__traceback__)
            raise UnsupportedOpError(
                f"deconvviz cannot capture the forward of {type(model).__name__}"
                + (f" at {line}" if line else "")
                + f": torch.fx cannot trace it ({first_line(fx_error)}) and torch.export "
                  f"cannot capture it ({first_line(export_error)}); a forward that branches "
                  f"on tensor values cannot be captured") from None
        graph = graph_module.graph
        module_outputs = defaultdict(list, found)
        tracer.tuple_outputs.clear()  # what the failed trace saw is not this graph's
        capture = "torch.export"
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
    module_outputs[""] = [returned] if isinstance(returned, fx.Node) else []
    return TracedModel(weakref.ref(model), graph_module, ops, dict(module_outputs), input_node,
                       output_node, dict(tracer.tuple_outputs), capture)


def _where(node: fx.Node, root: str) -> str:
    """Where the op is in the user's code: its module path, or the forward it is written in
    with the file and line (``Net.forward (model.py:23)``)."""
    if node.op == "call_module":
        return str(node.target)
    if _is_field(node):  # x.values: fx creates it where first used; it belongs to its source
        return _where(node.args[0], root)
    stack = node.meta.get("nn_module_stack") or {}
    line = _user_line(node)
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
        where = f"{path} ({cls_name}.forward)" if path else f"{cls_name}.forward"
    else:
        where = f"{root}.forward"
    return f"{where[:-1]}, {line})" if line and where.endswith(")") else \
        f"{where} ({line})" if line else where


def _is_field(node: fx.Node) -> bool:
    """A named tuple's field (``torch.sort(x, 1).values``) read as an attribute."""
    return node.op == "call_function" and node.target is getattr and len(node.args) > 1 \
        and node.args[1] in NAMED_TUPLE_FIELDS and isinstance(node.args[0], fx.Node)


_TORCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))


def _user_line(node: fx.Node) -> str:
    """``file.py:23`` of the innermost frame of the node's stack outside torch, if known."""
    trace = node.meta.get("stack_trace") or ""
    found = ""
    for match in re.finditer(r'File "([^"]+)", line (\d+)', trace):
        path = os.path.abspath(match.group(1))
        if not path.startswith(os.path.join(_TORCH_DIR, "torch") + os.sep):
            found = f"{os.path.basename(path)}:{match.group(2)}"
    return found


def _flat_nodes(args) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


# Reading a tensor's shape gives numbers, not a signal: x.size(0), x.shape, len(x), x.dim().
_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "ndimension"}
_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}
# Tensors made from another's shape alone (``torch.zeros_like(x)``): constants, as a literal.
_SHAPED_LIKE = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}
_SHAPED_LIKE_METHODS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}


def _reads_shape(node: fx.Node) -> bool:
    packet = getattr(node.target, "overloadpacket", None)
    if packet is not None and packet.__name__ in ("sym_size", "sym_numel", "sym_stride",
                                                  "sym_storage_offset", "_assert_scalar"):
        return True  # torch.export's reads of a symbolic size
    if node.op == "call_module" and str(node.target) == "_guards_fn":
        return True  # torch.export's checks of the input's size
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS or node.target in _SHAPED_LIKE_METHODS
    if node.op == "call_function" and node.target in _SHAPED_LIKE:
        return True
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRIBUTES
    return node.op == "call_function" and node.target is len


def _classify(node: fx.Node, gm: fx.GraphModule, from_input: set, root: str) -> Op:
    inputs = [n for n in _flat_nodes((node.args, node.kwargs)) if n in from_input]
    where = _where(node, root)
    if node.op == "placeholder":
        return Op(node, "input", "input", "input image")
    if node.op == "output":
        return Op(node, "constant", "output", "output", inputs=inputs)
    if not inputs or _reads_shape(node):  # constants for the reverse pass: no signal flows
        return Op(node, "constant", where, str(node.target))
    refused = node.meta.get(REFUSED)
    if refused:  # captured by torch.export where no rule can tell what it was
        return Op(node, "unsupported", where, str(node.target), inputs=inputs,
                  params={"refused": refused})
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if node.op == "call_module":
        call = Call(node, "module", inputs, module, gm)
        rule = claiming_rule("module", type(module), call)
    elif node.op in ("call_function", "call_method"):
        call = Call(node, node.op[5:], inputs, None, gm)
        rule = claiming_rule(call.kind, node.target, call)
    else:
        return Op(node, "unsupported", where, f"{node.op} {node.target}", inputs=inputs)
    if rule is None:
        packet = getattr(node.target, "overloadpacket", None)  # an ATen op (torch.export)
        label = f"aten.{packet.__name__}" if packet is not None else {
                 "module": call.name if module is not None else "",
                 "function": f"{getattr(node.target, '__module__', '') or ''}."
                             f"{call.name}".lstrip("."),
                 "method": f"Tensor.{node.target}"}[call.kind]
        return Op(node, "unsupported", where, label, module=module, inputs=inputs)
    try:
        label, params = rule.parse(call)
    except Unsupported as exc:
        return Op(node, "unsupported", where, str(exc), module=module, inputs=inputs)
    return Op(node, rule.kind, where, label, module=module, params=params, inputs=inputs)
