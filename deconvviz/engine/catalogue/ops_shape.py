"""The op rules of average pools, transposes, reshapes, concatenation, addition and scaling
by a constant: one :func:`~deconvviz.engine.catalogue.rules.register_rule` per op kind (see
:mod:`deconvviz.engine.catalogue.ops`, which imports this module after its own rules, in that order).
"""
from __future__ import annotations

import operator
from typing import Any, List, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import UnsupportedOpError
from .geometry import (
    Geometry,
    Window,
    sliding_window,
)
from .ops_common import (
    NAMED_TUPLE_FIELDS,
    _describe,
    _pool_params,
    _same_field,
    _same_window,
    _sliding_field,
    _unbroadcast,
    _vjp,
)
from .rules import Rule, Unsupported, register_rule

__all__: list = []


# -- average pools ---------------------------------------------------------------------------
def _parse_avgpool(call):
    if call.kind == "module":
        m = call.module
        p = _pool_params(m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)
        return _describe("AvgPool2d", p), p
    p = _pool_params(call.arg(1, "kernel_size"), call.arg(2, "stride"),
                     call.arg(3, "padding", 0), 1, call.arg(4, "ceil_mode", False))
    return _describe("avg_pool2d", p), p


def _avgpool_window(op, out, shapes) -> Optional[Window]:
    if op.params["padding"] != (0, 0) or op.params["ceil_mode"]:
        return None
    return sliding_window(out, op.params, (0, 0))


register_rule(Rule(
    kind="avgpool", description="transpose of the average pool", reverse=_vjp,
    modules=(nn.AvgPool2d,), functions=(F.avg_pool2d,), parse=_parse_avgpool,
    window=_avgpool_window, field=_sliding_field))


def _adaptive_field(op, fields, in_shapes, out_shape) -> Optional[Geometry]:
    h, w = in_shapes[0][-2:]
    oh, ow = out_shape[-2:]
    if (h, w) == (oh, ow):
        return fields[0]
    if h % oh or w % ow:
        return None
    k = (h // oh, w // ow)
    g = fields[0]
    return Geometry(tuple(g.size[i] + (k[i] - 1) * g.stride[i] for i in range(2)),
                    tuple(g.stride[i] * k[i] for i in range(2)), g.start)


register_rule(Rule(
    kind="adaptive_avgpool", description="transpose of the adaptive average pool",
    reverse=_vjp, modules=(nn.AdaptiveAvgPool2d,), functions=(F.adaptive_avg_pool2d,),
    parse=lambda call: (f"AdaptiveAvgPool2d({call.module.output_size})" if call.kind == "module"
                        else f"adaptive_avg_pool2d({call.arg(1, 'output_size')})", {}),
    field=_adaptive_field))


# -- other linear ops: their transpose, by autograd ------------------------------------------
def _parse_transpose(call):
    if call.kind == "function" and call.target is F.pad \
            and call.arg(2, "mode", "constant") != "constant":
        raise Unsupported(f"pad(mode={call.arg(2, 'mode')!r})")
    label = call.name if call.kind == "function" else f".{call.name}()"
    found: List = []
    fx.node.map_arg((call.node.args, call.node.kwargs), lambda n: found.append(n) or n)
    if any(a not in call.inputs for a in found):
        # Computed arguments (an index from the data): the exact vector-Jacobian product at
        # the recorded point takes it, as every other op (the methods' fallback).
        raise Unsupported(f"{label} with computed arguments")
    return label, {}


register_rule(Rule(
    kind="transpose", description="transpose of the linear op", reverse=_vjp,
    functions=(operator.getitem, F.pad, torch.mean), methods=("mean",),
    parse=_parse_transpose, window=_same_window, field=_same_field))


# -- reshapes --------------------------------------------------------------------------------
def _parse_reshape(call):
    if call.kind == "module":
        return "Flatten", {}
    return (call.name if call.kind == "function" else f".{call.name}()"), {}


register_rule(Rule(
    kind="reshape", description="reshape back",
    reverse=lambda op, s, ctx: [(op.inputs[0], s.reshape(ctx.shape(op.inputs[0])))],
    modules=(nn.Flatten,),
    functions=(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten),
    methods=("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"),
    parse=_parse_reshape, window=_same_window, field=_same_field))


# -- concatenation: split back ---------------------------------------------------------------
def _split(op, s, ctx):
    parts = op.node.args[0]
    dim = op.params["dim"]
    dim = dim if dim >= 0 else dim + s.dim()
    if dim == 0:
        raise UnsupportedOpError(f"cat along the batch dimension at {op.where}")
    out, offset = [], 0
    for part in parts:
        size = ctx.rec.shapes[part.name][dim]
        if part in op.inputs:
            out.append((part, s.narrow(dim, offset, size)))
        offset += size
    return out


def _cat_window(op, out, shapes) -> Optional[Window]:
    if op.params["dim"] not in (1, 1 - len(shapes[op.name])):
        return None
    return _same_window(op, out, shapes)


register_rule(Rule(
    kind="cat", description="split back to the inputs", reverse=_split,
    functions=tuple(dict.fromkeys((torch.cat, torch.concat))),
    parse=lambda call: ("cat", {"dim": call.arg(1, "dim", 0)}),
    window=_cat_window, field=_same_field))


# -- addition: down every branch -------------------------------------------------------------
def _constant_factor(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _parse_add(call):
    subtract = call.target in (operator.sub, torch.sub) or str(call.name).startswith("sub")
    alpha = _constant_factor(call.node.kwargs.get("alpha", 1)) or 1.0
    signs = []
    for i, a in enumerate(call.node.args[:2]):
        if a in call.inputs:  # anything else is a constant shift, which vanishes on the way down
            signs.append((a, 1.0 if i == 0 else (-alpha if subtract else alpha)))
    label = ("sub" if subtract else "add") + (
        " (both branches)" if len(signs) > 1 else " of a constant (the shift vanishes)")
    return label, {"signs": signs}


def _branches(op, s, ctx):
    return [(node, _unbroadcast(s * sign, ctx.shape(node))) for node, sign in op.params["signs"]]


register_rule(Rule(
    kind="add", description="signal down every branch from the input", reverse=_branches,
    functions=(operator.add, torch.add, operator.sub, torch.sub),
    methods=("add", "add_", "sub", "sub_"), parse=_parse_add,
    window=_same_window, field=_same_field))


# -- scaling by a constant -------------------------------------------------------------------
def _parse_scale(call):
    if call.target is operator.neg:
        return "neg", {"factor": -1.0}
    divide = call.target in (operator.truediv, torch.div) or str(call.name).startswith("div")
    name = "div" if divide else "mul"
    a, b = (call.node.args + (None, None))[:2]
    if len(call.inputs) != 1 or (divide and b in call.inputs):
        raise Unsupported(f"{name} of two tensors from the input")
    other = b if a in call.inputs else a
    factor: Any
    if isinstance(other, fx.Node):
        if other.op != "get_attr":
            raise Unsupported("mul by a computed tensor")
        factor = ("attr", other.target)
    else:
        factor = _constant_factor(other)
        if factor is None:
            raise Unsupported(f"mul by {other!r}")
        if divide:
            factor = 1.0 / factor
    return f"{name} by a constant", {"factor": factor, "divide": divide}


def _scale(op, s, ctx):
    factor = op.params["factor"]
    if isinstance(factor, tuple):  # ("attr", target): a constant tensor of the model
        factor = _get_attr(ctx.traced.graph_module, factor[1])
        if op.params["divide"]:
            factor = 1.0 / factor
    source = op.inputs[0]
    return [(source, _unbroadcast(s * factor, ctx.shape(source)))]


def _get_attr(module: nn.Module, target: str) -> Tensor:
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


register_rule(Rule(
    kind="scale", description="scale by the constant", reverse=_scale,
    functions=(operator.mul, torch.mul, operator.truediv, torch.div, operator.neg),
    methods=("mul", "mul_", "div", "div_"), parse=_parse_scale,
    window=_same_window, field=_same_field))


# -- a named tuple's field: torch.sort(x, 1).values, torch.max(x, 1).indices -----------------
def _parse_field(call):
    name = call.arg(1, "name")
    if name not in NAMED_TUPLE_FIELDS:
        raise Unsupported(f".{name}")  # another attribute: the methods' exact fallback
    return f".{name}", {"item": NAMED_TUPLE_FIELDS[name]}


register_rule(Rule(
    kind="field", description="the signal goes to that item of the op's result",
    reverse=lambda op, s, ctx: [(op.inputs[0], {op.params["item"]: s})],
    functions=(getattr,), parse=_parse_field, window=_same_window, field=_same_field))
