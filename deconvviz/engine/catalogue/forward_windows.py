"""Each op kind's forward window, for the incremental forward
(:mod:`deconvviz.engine.passes.incremental`): which ops slide (convolutions, pools: the rows
their field meets), which act on each position alone (activations, BatchNorm, additions,
gates: the window as it is) and which mix every position (their output changes everywhere).

A sliding op with kernel k, stride s, leading padding p and dilation d changes outputs
``ceil((a + p - d(k-1)) / s)`` to ``floor((b - 1 + p) / s)`` when its input changed in rows
``a`` to ``b - 1`` (likewise columns), clipped to the map: the receptive-field arithmetic of
:mod:`deconvviz.engine.catalogue.geometry`, read forwards.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .geometry import leading_padding

__all__ = ["SLIDING", "forward_kind", "sliding_params", "sliding_rows", "run_sliding",
           "macs_per_position"]

# Op kinds that act on each position alone (channels may mix): they run on the window.
_POINTWISE = {"relu", "relu6", "activation", "pointwise", "identity", "batchnorm", "lrn", "scale", "add",
              "product", "cat"}
# Ops no rule claims that are pointwise all the same.
_POINTWISE_MODULES = (nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Softplus)
_POINTWISE_FUNCTIONS = {torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, F.hardsigmoid,
                        operator.mul, operator.add, torch.mul, torch.add}
_POINTWISE_METHODS = {"sigmoid", "tanh", "sigmoid_", "tanh_"}
# Ops that mix every position: their output changes everywhere (no warning, nothing to save).
_GLOBAL = {"linear", "reshape", "adaptive_avgpool", "constant"}
SLIDING = {"conv", "maxpool", "avgpool", "adaptive_avgpool"}


def forward_kind(op, node: fx.Node, shape, in_shape, value_of: Callable[[fx.Node], Any],
                 is_live: Callable[[fx.Node], bool]) -> Tuple[Optional[str], Optional[dict]]:
    """How the incremental forward runs ``op`` (output ``shape``, first input ``in_shape``):
    ``("sliding", params)`` on the rows its field meets, ``("pointwise", None)`` on the
    window as it is, ``("global", None)`` (its output changes everywhere) or ``(None, None)``
    (no forward-window rule). ``value_of(node)``: a node's value in the unchanged image;
    ``is_live(node)``: whether it depends on the input."""
    if op.kind in SLIDING and shape is not None:
        params = sliding_params(op, (in_shape, shape))
        if params is not None:
            return "sliding", params
    if op.kind in _GLOBAL or (op.kind == "transpose" and node.target in (torch.mean, "mean")):
        return "global", None
    if op.kind in _POINTWISE:
        if op.kind == "cat" and op.params.get("dim") not in (1, -3):
            return None, None
    elif not (isinstance(op.module, _POINTWISE_MODULES)
              or (node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS)
              or (node.op == "call_method" and node.target in _POINTWISE_METHODS)):
        return None, None
    if shape is None or len(shape) != 4:
        return None, None
    # Maps of the output's size or broadcast ones (a gate); constants without extent.
    ok = [True]

    def check(n):
        v = value_of(n)
        if isinstance(v, Tensor) and v.dim() >= 3 and tuple(v.shape[-2:]) not in (
                (1, 1), tuple(shape[-2:])):
            ok[0] = False
        if not is_live(n) and isinstance(v, Tensor) and v.dim() >= 3 \
                and tuple(v.shape[-2:]) != (1, 1):
            ok[0] = False
        return n
    fx.node.map_arg((node.args, node.kwargs), check)
    return ("pointwise", None) if ok[0] else (None, None)


def sliding_params(op, shape) -> Optional[dict]:
    """kernel, stride, dilation, leading padding and fill of a sliding op, or ``None`` where it
    has no window rule (an average pool whose divisor changes at the border)."""
    p = op.params
    if op.kind == "conv":
        return dict(kernel=p["kernel"], stride=p["stride"], dilation=p["dilation"],
                    pad=leading_padding(p), fill=0.0)
    if op.kind == "maxpool":
        return dict(kernel=p["kernel"], stride=p["stride"], dilation=p["dilation"],
                    pad=p["padding"], fill=-math.inf)
    if op.kind == "avgpool":
        include = _avgpool_arg(op, "count_include_pad", 5, True)
        if (p["padding"] != (0, 0) and not include) or p["ceil_mode"]:
            return None
        return dict(kernel=p["kernel"], stride=p["stride"], dilation=(1, 1), pad=p["padding"],
                    fill=0.0, divisor=_avgpool_arg(op, "divisor_override", 6, None))
    if op.kind == "adaptive_avgpool":
        (h, w), (oh, ow) = shape[0][-2:], shape[1][-2:]
        if h % oh or w % ow:
            return None
        k = (h // oh, w // ow)
        return dict(kernel=k, stride=k, dilation=(1, 1), pad=(0, 0), fill=0.0, divisor=None)
    return None


def _avgpool_arg(op, name: str, index: int, default):
    if op.module is not None:
        return getattr(op.module, name, default)
    args = op.node.args
    return args[index] if len(args) > index else op.node.kwargs.get(name, default)


def sliding_rows(params: dict, axis: int, a: Tensor, b: Tensor, bound: int):
    """The output rows (``axis`` 0) or columns (1) ``[lo, hi)`` a sliding op changes where its
    input changed in ``[a, b)``, clipped to ``[0, bound]``."""
    k, st, d, pad = params["kernel"][axis], params["stride"][axis], params["dilation"][axis], \
        params["pad"][axis]
    ext = d * (k - 1)
    return ((-(-(a + pad - ext) // st)).clamp(0, bound),
            ((b - 1 + pad) // st + 1).clamp(0, bound))


def run_sliding(op, params: dict, region: Tensor) -> Tensor:
    """The sliding op on ``region`` (the input rows its outputs read, padding included)."""
    k, st, d = params["kernel"], params["stride"], params["dilation"]
    if op.kind == "conv":
        m = op.module
        return F.conv2d(region, m.weight, m.bias, st, 0, d, m.groups)
    if op.kind == "maxpool":
        return F.max_pool2d(region, k, st, 0, d)
    return F.avg_pool2d(region, k, st, 0, divisor_override=params["divisor"])


def macs_per_position(op, out_shape) -> int:
    """Multiply-adds per output position (per output value, all channels) of a conv or linear."""
    if op.kind == "conv":
        m = op.module
        return m.out_channels * (m.in_channels // m.groups) * math.prod(op.params["kernel"])
    if op.kind == "linear":
        return op.module.in_features * op.module.out_features
    return 0
