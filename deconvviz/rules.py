"""The deconvnet's rule for each kind of forward op, on full-size signals.

Each rule takes the forward :class:`~deconvviz.graph.Op`, the signal coming down onto its
output (``[N*K, ...]``: K seeds for each of N images) and a context holding the recording,
and returns ``(input node, signal)`` pairs for the op's inputs that come from the image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UnsupportedOpError
from .graph import TracedModel
from .recording import Recording

__all__ = ["RULES", "REVERSE", "Context", "batchnorm_scale", "conv_weight", "fold_batchnorms"]

RULES: Dict[str, str] = {
    "relu": "rectify: relu(signal)",
    "maxpool": "unpool through the switches (overlaps add)",
    "conv": "transposed convolution, same weights, no bias",
    "linear": "transposed weight",
    "batchnorm": "scale by weight / sqrt(running_var + eps)",
    "identity": "identity",
    "avgpool": "transpose of the average pool",
    "adaptive_avgpool": "transpose of the adaptive average pool",
    "transpose": "transpose of the linear op",
    "reshape": "reshape back",
    "cat": "split back to the inputs",
    "add": "signal down every branch from the input",
    "scale": "scale by the constant",
}


@dataclass
class Context:
    rec: Recording
    n: int  # images
    k: int  # seeds per image
    traced: TracedModel
    # BatchNorms whose scale is folded into the convolution below them (see fold_batchnorms):
    # BatchNorm node name -> convolution node name.
    folded: Dict[str, str] = field(default_factory=dict)

    def weight(self, op) -> Tensor:
        return conv_weight(op, self.folded, self.traced)

    def shape(self, node) -> Tuple[int, ...]:
        """Recorded shape of ``node`` with the batch dimension widened to N*K signals."""
        s = self.rec.shapes[node.name]
        if s[0] != self.n:
            raise UnsupportedOpError(f"node {node.name!r} changes the batch dimension; the "
                                     f"deconvnet needs ops that keep images apart")
        return (self.n * self.k, *s[1:])


def _rectify(op, s, ctx):
    return [(op.inputs[0], F.relu(s))]


def _identity(op, s, ctx):
    return [(op.inputs[0], s)]


def _unpool(op, s, ctx):
    source = op.inputs[0]
    _, c, h, w = ctx.shape(source)
    switches = ctx.rec.switches_of(op.name)  # [N, C, h', w'] flat offsets into h*w
    n, k = ctx.n, ctx.k
    hw = switches.shape[-2] * switches.shape[-1]
    index = switches.reshape(n, 1, c, hw).expand(n, k, c, hw)
    out = s.new_zeros(n, k, c, h * w)
    out.scatter_add_(3, index, s.reshape(n, k, c, hw))  # add, not overwrite: windows overlap
    return [(source, out.reshape(n * k, c, h, w))]


def _transposed_conv(op, s, ctx):
    p = op.params
    source = op.inputs[0]
    in_h, in_w = ctx.shape(source)[-2:]
    padding = p["padding"]
    if isinstance(padding, str):  # "valid" or "same" (stride 1): transpose unpadded, then crop
        full = F.conv_transpose2d(s, ctx.weight(op), None, 1, 0, 0, p["groups"], p["dilation"])
        top = [(d * (k - 1)) // 2 if padding == "same" else 0
               for k, d in zip(p["kernel"], p["dilation"])]
        return [(source, full[..., top[0]:top[0] + in_h, top[1]:top[1] + in_w])]
    out_pad = []
    for size, o, k, st, pd, d in zip((in_h, in_w), s.shape[-2:], p["kernel"], p["stride"],
                                     padding, p["dilation"]):
        out_pad.append(size - ((o - 1) * st - 2 * pd + d * (k - 1) + 1))
    x = F.conv_transpose2d(s, ctx.weight(op), None, p["stride"], padding, tuple(out_pad),
                           p["groups"], p["dilation"])
    return [(source, x)]


def _transposed_linear(op, s, ctx):
    return [(op.inputs[0], s.matmul(op.module.weight))]


def batchnorm_scale(m: nn.Module) -> Tensor:
    """The per-channel scale of an eval-mode BatchNorm: weight / sqrt(running_var + eps)."""
    scale = torch.rsqrt(m.running_var + m.eps)
    return scale * m.weight if m.weight is not None else scale


def fold_batchnorms(ops_down) -> Dict[str, str]:
    """BatchNorms that directly follow a convolution whose only user they are, mapped to that
    convolution: their scale can ride on its transposed weight, saving a pass over the
    signal."""
    by_name = {op.name: op for op in ops_down}
    folded = {}
    for op in ops_down:
        below = by_name.get(op.inputs[0].name) if op.inputs else None
        if op.kind == "batchnorm" and below is not None and below.kind == "conv" \
                and len(below.node.users) == 1:
            folded[op.name] = below.name
    return folded


def conv_weight(op, folded: Dict[str, str], traced: TracedModel) -> Tensor:
    """The convolution's weight, times the scale of a BatchNorm folded into it."""
    weight = op.module.weight
    for bn_name, conv_name in folded.items():
        if conv_name == op.name:
            scale = batchnorm_scale(traced.ops[bn_name].module)
            return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight


def _batchnorm_scale(op, s, ctx):
    if op.name in ctx.folded:
        return [(op.inputs[0], s)]  # applied with the convolution's weight below
    scale = batchnorm_scale(op.module)
    return [(op.inputs[0], s * scale.reshape(1, -1, *([1] * (s.dim() - 2))))]


def _vjp(op, s, ctx):
    """Any other linear op: its transpose is its vector-Jacobian product, computed exactly by
    autograd on a dummy input (the op is linear, so the point does not matter)."""
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


def _reshape_back(op, s, ctx):
    return [(op.inputs[0], s.reshape(ctx.shape(op.inputs[0])))]


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


def _branches(op, s, ctx):
    return [(node, _unbroadcast(s * sign, ctx.shape(node))) for node, sign in op.params["signs"]]


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


def _unbroadcast(s: Tensor, shape: Tuple[int, ...]) -> Tensor:
    if tuple(s.shape) == tuple(shape):
        return s
    while s.dim() > len(shape):
        s = s.sum(0)
    dims = [d for d in range(1, len(shape)) if shape[d] == 1 and s.shape[d] != 1]
    return s.sum(dims, keepdim=True) if dims else s


REVERSE = {
    "relu": _rectify, "identity": _identity, "maxpool": _unpool, "conv": _transposed_conv,
    "linear": _transposed_linear, "batchnorm": _batchnorm_scale, "avgpool": _vjp,
    "adaptive_avgpool": _vjp, "transpose": _vjp, "reshape": _reshape_back, "cat": _split,
    "add": _branches, "scale": _scale,
}
