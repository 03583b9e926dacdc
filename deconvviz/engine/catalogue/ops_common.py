"""What the op rules share: parameter parsing and printing, the identity and same-window
geometry, the vector-Jacobian product at the recorded input, and index helpers.

The rules themselves are in :mod:`deconvviz.engine.catalogue.ops` (ReLU, pools, convolutions, linear
layers, BatchNorm, identities) and :mod:`deconvviz.engine.catalogue.ops_shape` (average pools, transposes,
reshapes, concatenation, addition, scaling).
"""
from __future__ import annotations

import operator
from typing import Any, Dict, Optional, Tuple

import torch
import torch.fx as fx
from torch import Tensor

from .geometry import (
    Geometry,
    Window,
    same_layout_field,
    sliding_field,
)

__all__ = ["NAMED_TUPLE_FIELDS", "_pair", "_short", "_describe", "_pool_params", "_first", "_same_field",
           "_same_window", "_sliding_field", "_vjp", "_unbroadcast", "_inside"]


# The fields of the named tuples torch's ops return (sort, max, min, median, topk, kthvalue,
# mode, cummax, ...): ``values`` is item 0, ``indices`` item 1.
NAMED_TUPLE_FIELDS = {"values": 0, "indices": 1}


# -- shared helpers --------------------------------------------------------------------------
def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _short(v):
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v


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


def _pool_params(kernel, stride, padding, dilation, ceil_mode) -> Dict[str, Any]:
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, [], ()) else kernel
    return dict(kernel=kernel, stride=stride, padding=_pair(padding), dilation=_pair(dilation),
                ceil_mode=bool(ceil_mode))


def _first(op, s, ctx):
    return [(op.inputs[0], s)]


def _same_field(op, fields, in_shapes, out_shape) -> Optional[Geometry]:
    """Ops that keep the spatial layout: the union of the inputs' fields."""
    return same_layout_field(fields, in_shapes, out_shape)


def _same_window(op, out: Window, shapes) -> Optional[Window]:
    """Ops that keep the spatial layout: the window passes through unchanged."""
    shape = shapes[op.name]
    for node in op.inputs:
        inner = shapes.get(node.name)
        if inner is None or len(inner) < 3 or inner[-2:] != shape[-2:]:
            return None
    return out


def _sliding_field(op, fields, in_shapes, out_shape) -> Geometry:
    return sliding_field(fields[0], op.params)


def _vjp(op, s, ctx):
    """A linear op's transpose is its vector-Jacobian product, computed exactly by autograd on
    a dummy input (the op is linear, so the point does not matter)."""
    source = op.inputs[0]
    if op.node.target is operator.getitem and source.name not in ctx.rec.shapes:
        return [(source, {op.node.args[1]: s})]  # an item of a tuple: its signal, by index
    dummies = {n: torch.zeros(ctx.shape(n), dtype=s.dtype, device=s.device, requires_grad=True)
               for n in dict.fromkeys(op.inputs)}
    args = fx.node.map_arg(op.node.args, lambda n: dummies[n])
    kwargs = fx.node.map_arg(op.node.kwargs, lambda n: dummies[n])
    with torch.enable_grad():
        if op.node.op == "call_module":
            out = op.module(*args, **kwargs)
        elif op.node.op == "call_method":
            out = getattr(args[0], op.node.target)(*args[1:], **kwargs)
        else:
            out = op.node.target(*args, **kwargs)
        grads = torch.autograd.grad(out, list(dummies.values()), s, allow_unused=True)
    return [(n, g) for n, g in zip(dummies, grads) if g is not None]


def _unbroadcast(s: Tensor, shape: Tuple[int, ...]) -> Tensor:
    if tuple(s.shape) == tuple(shape):
        return s
    while s.dim() > len(shape):
        s = s.sum(0)
    dims = [d for d in range(1, len(shape)) if shape[d] == 1 and s.shape[d] != 1]
    return s.sum(dims, keepdim=True) if dims else s


def _inside(starts, size, bounds) -> Optional[Tensor]:
    """``[S, 1, h, w]`` float mask of the window positions inside the map, or ``None`` when
    every window lies inside."""
    (y0, x0), (h, w) = starts, size
    if bool((y0 >= 0).all() and (y0 + h <= bounds[0]).all() and (x0 >= 0).all()
            and (x0 + w <= bounds[1]).all()):
        return None
    rows = y0[:, None] + torch.arange(h, device=y0.device)
    cols = x0[:, None] + torch.arange(w, device=x0.device)
    keep = ((rows >= 0) & (rows < bounds[0]))[:, :, None] \
        & ((cols >= 0) & (cols < bounds[1]))[:, None, :]
    return keep[:, None].float()
