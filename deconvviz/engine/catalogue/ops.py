"""The built-in op rules: one :func:`~deconvviz.engine.catalogue.rules.register_rule` per op kind.

Adding an op means adding one rule here (or in :mod:`deconvviz.engine.catalogue.ops_shape`, for shape
and arithmetic ops, registered after these; the helpers they share are in
:mod:`deconvviz.engine.catalogue.ops_common`): what it matches, how it reads its parameters, its
reverse step (full size and, where different, on the cone's windows), its window and its
receptive-field arithmetic. The documentation's rule tables are generated from these
registrations (``deconvviz.engine.rule_table``).

Reverse functions take ``(op, signal, ctx)``: the forward :class:`~deconvviz.engine.passes.graph.Op`,
the signal coming down onto its output (``[N*K, ...]``: K seeds for each of N images, or S
stacked windows in the cone) and the pass's context (:mod:`deconvviz.engine.passes.reverse`), and
return ``(input node, signal)`` for each of the op's inputs that come from the image.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from ...errors import UnsupportedOpError
from .geometry import (
    Window,
    leading_padding,
    sliding_window,
    symmetric_padding,
)
from .ops_common import (
    _describe,
    _first,
    _inside,
    _pair,
    _pool_params,
    _same_field,
    _same_window,
    _sliding_field,
)
from .rules import Rule, Unsupported, register_rule

__all__ = ["batchnorm_scale", "fold_batchnorms", "conv_weight"]


# -- ReLU: each method supplies its own reverse ----------------------------------------------
def _parse_relu(call):
    if call.kind == "module":
        return "ReLU", {}
    if call.kind == "function":
        return f"{call.name} (functional)", {}
    return f".{call.name}()", {}


register_rule(Rule(
    kind="relu", description="the method's own rule", reverse=None,
    modules=(nn.ReLU,),
    functions=tuple(dict.fromkeys((F.relu, torch.relu, torch.relu_, getattr(F, "relu_", F.relu)))),
    methods=("relu", "relu_"), parse=_parse_relu, window=_same_window, field=_same_field,
    needs=frozenset()))


# -- max-pool: unpool through the switches ---------------------------------------------------
def _parse_maxpool(call):
    if call.kind == "module":
        m = call.module
        if m.return_indices:
            raise Unsupported("MaxPool2d(return_indices=True)")
        p = _pool_params(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        return _describe("MaxPool2d", p), p
    if call.arg(6, "return_indices", False):
        raise Unsupported("max_pool2d(return_indices=True)")
    p = _pool_params(call.arg(1, "kernel_size"), call.arg(2, "stride"),
                     call.arg(3, "padding", 0), call.arg(4, "dilation", 1),
                     call.arg(5, "ceil_mode", False))
    return _describe("max_pool2d", p), p


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


def _local_switches(op, ctx):
    """Switches as flat offsets into the natural window below a window starting at each
    output position, channels last, padded with -1 so that windows may hang over the map's
    edges."""
    switches = ctx.rec.switches_of(op.name).permute(0, 2, 3, 1)  # [N, ho, wo, C]
    ho, wo = switches.shape[1:3]
    width = ctx.rec.shapes[op.inputs[0].name][-1]
    s, pad = op.params["stride"], symmetric_padding(op.params)
    device = switches.device
    rows = switches // width - (torch.arange(ho, device=device) * s[0] - pad[0])[:, None, None]
    cols = switches % width - (torch.arange(wo, device=device) * s[1] - pad[1])[:, None]
    nh, nw = ctx.windows[op.name].size
    uh, uw = ctx.natural.size
    local = F.pad(rows * uw + cols, (0, 0, nw, nw, nh, nh), value=-1)
    pattern = (torch.arange(nh, device=device)[:, None] * s[0] * uw
               + torch.arange(nw, device=device) * s[1])
    # [N, ho + nh + 1, wo + nw + 1, C, nh, nw]: every window, as a view
    return local.unfold(1, nh, 1).unfold(2, nw, 1), pattern, (nh, nw)


def _unpool_windows(op, s, ctx):
    windows, pattern, (nh, nw) = ctx.cached(op.name, lambda: _local_switches(op, ctx))
    starts = ctx.windows[op.name].starts(ctx.ys, ctx.xs)
    seeds, channels = s.shape[:2]
    picked = windows[ctx.images, starts[0] + nh, starts[1] + nw]  # [S, C, nh, nw]
    # Outside the map the signal is zero, so any offset in the window will do there.
    index = (picked.clamp_min(0) + pattern).permute(0, 2, 3, 1).reshape(seeds, nh * nw,
                                                                         channels)
    uh, uw = ctx.natural.size
    out = s.new_zeros(seeds, uh * uw, channels)
    out.scatter_add_(1, index, s.permute(0, 2, 3, 1).reshape(seeds, nh * nw, channels))
    return [(op.inputs[0], out.reshape(seeds, uh, uw, channels).permute(0, 3, 1, 2))]


def _sliding_window(op, out, shapes) -> Optional[Window]:
    pad = symmetric_padding(op.params)
    if pad is None:
        return None
    return sliding_window(out, op.params, pad)


register_rule(Rule(
    kind="maxpool", description="unpool through the switches (overlaps add)", reverse=_unpool,
    modules=(nn.MaxPool2d,), functions=(F.max_pool2d, torch.max_pool2d),
    parse=_parse_maxpool, window=_sliding_window, field=_sliding_field,
    cone_reverse=_unpool_windows, needs=frozenset({"switches"})))


# -- convolution: transposed convolution -----------------------------------------------------
def _parse_conv(call):
    m = call.module
    p = dict(kernel=_pair(m.kernel_size), stride=_pair(m.stride), dilation=_pair(m.dilation),
             padding=m.padding if isinstance(m.padding, str) else _pair(m.padding),
             groups=m.groups)
    if m.padding_mode != "zeros":
        raise Unsupported(f"Conv2d(padding_mode={m.padding_mode!r})")
    groups = f", groups={m.groups}" if m.groups > 1 else ""
    shape = _describe("", p)[1:-1]
    return f"Conv2d({m.in_channels}, {m.out_channels}, {shape}{groups})", p


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


def conv_weight(op, folded: Dict[str, str], traced) -> Tensor:
    """The convolution's weight, times the scale of a BatchNorm folded into it."""
    weight = op.module.weight
    for bn_name, conv_name in folded.items():
        if conv_name == op.name:
            scale = batchnorm_scale(traced.ops[bn_name].module)
            return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight


def _transposed_conv(op, s, ctx):
    p = op.params
    source = op.inputs[0]
    in_h, in_w = ctx.shape(source)[-2:]
    padding = p["padding"]
    if isinstance(padding, str):  # "valid" or "same" (stride 1): transpose unpadded, then crop
        full = F.conv_transpose2d(s, ctx.weight(op), None, 1, 0, 0, p["groups"], p["dilation"])
        top = leading_padding(p)
        return [(source, full[..., top[0]:top[0] + in_h, top[1]:top[1] + in_w])]
    out_pad = []
    for size, o, k, st, pd, d in zip((in_h, in_w), s.shape[-2:], p["kernel"], p["stride"],
                                     padding, p["dilation"]):
        out_pad.append(size - ((o - 1) * st - 2 * pd + d * (k - 1) + 1))
    x = F.conv_transpose2d(s, ctx.weight(op), None, p["stride"], padding, tuple(out_pad),
                           p["groups"], p["dilation"])
    return [(source, x)]


def _transposed_conv_windows(op, s, ctx):
    p = op.params
    out = F.conv_transpose2d(s, ctx.weight(op), None, p["stride"], 0, 0, p["groups"],
                             p["dilation"])
    # What lands on the padding is dropped, as the full-size transposed convolution does.
    natural = ctx.natural
    keep = _inside(natural.starts(ctx.ys, ctx.xs), natural.size,
                   ctx.rec.shapes[op.inputs[0].name][-2:])
    return [(op.inputs[0], out if keep is None else out.mul_(keep))]


register_rule(Rule(
    kind="conv", description="transposed convolution, same weights, no bias",
    reverse=_transposed_conv, modules=(nn.Conv2d,), parse=_parse_conv,
    window=_sliding_window, field=_sliding_field, cone_reverse=_transposed_conv_windows))


# -- linear: transposed weight ---------------------------------------------------------------
register_rule(Rule(
    kind="linear", description="transposed weight",
    reverse=lambda op, s, ctx: [(op.inputs[0], s.matmul(op.module.weight))],
    modules=(nn.Linear,),
    parse=lambda call: (f"Linear({call.module.in_features}, {call.module.out_features})", {})))


# -- BatchNorm (eval): its per-channel scale -------------------------------------------------
def _batchnorm(op, s, ctx):
    if op.name in ctx.folded:
        return [(op.inputs[0], s)]  # applied with the convolution's weight below
    scale = batchnorm_scale(op.module)
    return [(op.inputs[0], s * scale.reshape(1, -1, *([1] * (s.dim() - 2))))]


def _check_batchnorm(op, layer: str) -> None:
    if op.module.training or op.module.running_var is None:
        raise UnsupportedOpError(
            f"{op.label} at {op.where} uses batch statistics (training mode or no running "
            f"stats); its reverse step needs eval mode: call model.eval()")


register_rule(Rule(
    kind="batchnorm", description="scale by weight / sqrt(running_var + eps)",
    reverse=_batchnorm, modules=(nn.BatchNorm2d, nn.BatchNorm1d),
    parse=lambda call: (f"{type(call.module).__name__}({call.module.num_features})", {}),
    window=_same_window, field=_same_field, check=_check_batchnorm))


# -- identities ------------------------------------------------------------------------------
_IDENTITY_LABELS = {nn.Dropout: "dropout", nn.Dropout2d: "dropout", nn.AlphaDropout: "dropout",
                    nn.Identity: "identity"}


def _parse_identity(call):
    if call.kind == "module":
        t = type(call.module)
        return f"{t.__name__}: {_IDENTITY_LABELS[t]}", {}
    if call.target is stochastic_depth:  # (input, p, mode, training=True)
        return "stochastic_depth: identity in eval", {"training": call.arg(3, "training", True)}
    if call.kind == "function":  # F.dropout(input, p=0.5, training=True, inplace=False)
        return f"{call.name}: dropout", {"training": call.arg(2, "training", True)}
    return f".{call.name}()", {}


def _check_identity(op, layer: str) -> None:
    """Dropout and stochastic depth are identities only in eval mode; in training mode they
    drop units at random, and a picture recorded under random masks explains nothing."""
    active = op.module.training if op.module is not None and \
        type(op.module) is not nn.Identity else op.params.get("training", False)
    if active:
        raise UnsupportedOpError(
            f"{op.label} at {op.where} is in training mode: it drops units at random, so a "
            f"reverse pass through it would differ from run to run; call model.eval()")


register_rule(Rule(
    kind="identity", description="identity", reverse=_first,
    modules=tuple(_IDENTITY_LABELS), functions=(F.dropout, F.dropout2d, stochastic_depth),
    methods=("contiguous", "clone", "float"), parse=_parse_identity,
    window=_same_window, field=_same_field, check=_check_identity))


# -- ReLU6 (and Hardtanh(0, 6)): each method supplies its own reverse -------------------------
def _parse_relu6(call):
    if call.kind == "module":
        m = call.module
        if type(m) is nn.Hardtanh and (m.min_val, m.max_val) != (0.0, 6.0):
            raise Unsupported(f"Hardtanh({m.min_val}, {m.max_val})")
        return type(m).__name__, {}
    if call.target is F.hardtanh:
        bounds = (call.arg(1, "min_val", -1.0), call.arg(2, "max_val", 1.0))
        if tuple(map(float, bounds)) != (0.0, 6.0):
            raise Unsupported(f"hardtanh{bounds}")
    return f"{call.name} (functional)", {}


register_rule(Rule(
    kind="relu6", description="the method's own rule", reverse=None,
    modules=(nn.ReLU6, nn.Hardtanh), functions=(F.relu6, F.hardtanh), parse=_parse_relu6,
    window=_same_window, field=_same_field))


# -- local response normalisation: each method supplies its own reverse ----------------------
register_rule(Rule(
    kind="lrn", description="the method's own rule", reverse=None,
    modules=(nn.LocalResponseNorm,), functions=(F.local_response_norm,),
    parse=lambda call: ("LocalResponseNorm: local response norm" if call.kind == "module"
                        else "local_response_norm", {}),
    window=_same_window, field=_same_field))


from . import ops_shape  # noqa: E402,F401  (its rules register after these, in order)
