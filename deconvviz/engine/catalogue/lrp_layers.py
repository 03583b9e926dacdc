"""LRP's rules for the layers with weights (convolutions, linear layers), BatchNorm folded in.

Each rule (Montavon et al., "Layer-Wise Relevance Propagation: An Overview", 2019; the
formulas and stabiliser of zennit 0.5) is a list of *terms* over *groups*. A group is a
denominator ``z`` (a forward pass of the layer with modified inputs and weights, stabilised)
and, for the γ rule, a mask of the outputs it applies to; a term is ``coef * input *
Wᵀ(R * mask / z)`` for a modified input and weight (``input`` omitted: the flat and w² rules
take no input). With ``x⁺ = max(x, 0)``, ``W⁺ = max(W, 0)`` (and ``⁻`` for the minimum):

==============  =================================================================  ==========
rule            denominator(s)                                                     terms
==============  =================================================================  ==========
``epsilon``     ``z = Wx + b``                                                     ``x·Wᵀ(R/z)``
``alphabeta``   ``z⁺ = W⁺x⁺ + b⁺ + W⁻x⁻``, ``z⁻ = W⁻x⁺ + b⁻ + W⁺x⁻``               ``α(x⁺·W⁺ᵀ + x⁻·W⁻ᵀ)(R/z⁺) − β(x⁺·W⁻ᵀ + x⁻·W⁺ᵀ)(R/z⁻)``
``gamma``       as αβ with ``W + γW⁺``, ``W + γW⁻`` (``b + γb⁺``, ``b + γb⁻``),    each side for the outputs of its sign
                ``y = Wx + b > 0`` or ``< 0``
``flat``        ``z = 1ᵀ1`` (all weights one, no bias)                             ``1ᵀ(R/z)``
``wsquare``     ``z = (W²)1 + b²``                                                 ``W²ᵀ(R/z)``
``zbox``        ``z = Wx + b − (W⁺l + b⁺) − (W⁻h + b⁻)``                           ``(x·Wᵀ − l·W⁺ᵀ − h·W⁻ᵀ)(R/z)``
==============  =================================================================  ==========

Every denominator is stabilised as zennit does: ``z + e·(sign(z) + [z = 0])``. ``zplus``,
``alpha2beta1`` and ``alpha1beta0`` are presets of ``alphabeta`` (α, β = 1, 0; 2, 1; 1, 0):
the rules' names, titles and parameters are data in :mod:`deconvviz.method_table`, and each
rule's arithmetic is one term builder in :data:`TERMS`, checked complete when this module
loads.

BatchNorm is folded from the graph, without per-architecture code: one that directly follows
a convolution (or linear layer) whose only user it is rides on its weights and bias (as
zennit's canonizers merge it); one whose only user is a convolution directly after it is
folded into that convolution's weights (over input channels) and a bias *map* (the padding
is zero after the normalisation, so the shift's contribution depends on the position). Any
other BatchNorm is an affine layer of its own under the ε rule.

The per-image parts (modified inputs, denominators) are computed once per recording and
cached there, so that the concepts of CRP (many signals per image) share them; a term whose
modified input is zero everywhere (``x⁻`` after a ReLU) is skipped: it adds exactly zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import method_table
from ...errors import ArgumentError, UnsupportedOpError
from .ops import batchnorm_scale

__all__ = ["stabilize", "fold_partner", "is_first_layer", "layer_reverse", "bounds_of",
           "is_conv_nd", "layer_input",
           "LayerAt", "TERMS", "register_terms", "check_terms"]

_PASSING = ("identity", "reshape")  # ops between the image and a first layer


def stabilize(z: Tensor, e: float) -> Tensor:
    """zennit's stabiliser: ``z + e * sign(z)``, with sign(0) = 1."""
    return z + e * ((z == 0).to(z) + z.sign())


# -- BatchNorm folding, from the graph -------------------------------------------------------
def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def fold_partner(op, traced) -> Tuple[Optional[str], Optional[object]]:
    """For a BatchNorm op: ``("after", conv op)`` when it folds into the layer below it,
    ``("before", conv op)`` into the convolution above it, ``(None, None)`` when it stays an
    affine layer of its own."""
    if op.kind != "batchnorm" or not op.inputs:
        return None, None
    below = traced.ops.get(op.inputs[0].name)
    if below is not None and below.kind in ("conv", "linear") and _only_user(below.node) is op.node:
        return "after", below
    user = _only_user(op.node)
    above = traced.ops.get(user.name) if user is not None else None
    if above is not None and above.kind == "conv" and above.inputs \
            and above.inputs[0] is op.node and _bn_dims_fit(op, above):
        return "before", above
    return None, None


def _bn_dims_fit(bn, conv) -> bool:
    return type(bn.module).__name__ == "BatchNorm2d"


def _folded_bn(op, traced, where: str):
    """The BatchNorm op folded into the layer ``op`` from ``where`` ("after" or "before")."""
    if where == "after":
        user = _only_user(op.node)
        bn = traced.ops.get(user.name) if user is not None else None
    else:
        bn = traced.ops.get(op.inputs[0].name) if op.inputs else None
    if bn is None:
        return None
    side, partner = fold_partner(bn, traced)
    return bn if side == where and partner is op else None


def is_first_layer(op, traced) -> bool:
    """Whether the layer reads the image (through identities, reshapes or a BatchNorm folded
    into it): zennit's "first layer" of a composite."""
    node = op.inputs[0] if op.inputs else None
    while node is not None:
        if node is traced.input_node:
            return True
        below = traced.ops.get(node.name)
        if below is None or not below.inputs:
            return False
        if below.kind not in _PASSING and not (
                below.kind == "batchnorm" and fold_partner(below, traced)[1] is op):
            return False
        node = below.inputs[0]
    return False


CONV_ND = (torch.nn.Conv1d, torch.nn.Conv3d)  # no op kind of their own: LRP takes them here
_CONV_ND_FORWARD = {torch.nn.Conv1d: F.conv1d, torch.nn.Conv3d: F.conv3d}


def is_conv_nd(op) -> bool:
    """A 1-D or 3-D convolution (zero padding): the layer rules apply as to a 2-D one."""
    return type(op.module) in _CONV_ND_FORWARD and op.module.padding_mode == "zeros"


def layer_input(op, ctx) -> Tensor:
    """The layer's recorded input (a 1-D or 3-D convolution records its arguments)."""
    if op.name in ctx.rec.inputs:
        return ctx.rec.inputs[op.name]
    return ctx.rec.arguments[op.name][op.inputs[0].name]


def _bias_shape(op, b: Tensor) -> Tensor:
    if op.kind == "conv" or is_conv_nd(op):
        return b.reshape(1, -1, *([1] * (op.module.weight.dim() - 2)))
    return b


def _affine(op, ctx) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The layer's input (the folded BatchNorm's input where one folds before it), weight and
    bias (broadcastable to its output), with the BatchNorms folded."""
    traced, module = ctx.traced, op.module
    x = layer_input(op, ctx)
    weight = module.weight
    bias = _bias_shape(op, module.bias) if module.bias is not None else None
    after = _folded_bn(op, traced, "after")
    if after is not None:
        bn = after.module
        a = batchnorm_scale(bn)
        shift = (bn.bias if bn.bias is not None else torch.zeros_like(a)) - bn.running_mean * a
        weight = weight * a.reshape(-1, *([1] * (weight.dim() - 1)))
        b0 = module.bias if module.bias is not None else torch.zeros_like(a)
        bias = _bias_shape(op, b0 * a + shift)
    before = _folded_bn(op, traced, "before")
    if before is not None:
        bn = before.module
        a = batchnorm_scale(bn)
        shift = (bn.bias if bn.bias is not None else torch.zeros_like(a)) - bn.running_mean * a
        x = ctx.rec.inputs[before.name]
        groups = op.params["groups"]
        a_w = a.reshape(groups, -1).repeat_interleave(weight.shape[0] // groups, dim=0)
        # the shift's contribution, position by position (zero padding after the shift)
        shift_map = shift.reshape(1, -1, 1, 1).expand(1, *x.shape[1:]).to(x)
        bias_map = _forward(op, shift_map, weight, bias)
        weight = weight * a_w[:, :, None, None]
        bias = bias_map
    return x.to(weight.dtype) if x.dtype != weight.dtype else x, weight, bias


# -- forward and transpose of one layer with given weights ------------------------------------
def _forward(op, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    if op.kind == "conv":
        p = op.params
        out = F.conv2d(x, weight, None, p["stride"], p["padding"], p["dilation"], p["groups"])
    elif is_conv_nd(op):
        m = op.module
        out = _CONV_ND_FORWARD[type(m)](x, weight, None, m.stride, m.padding, m.dilation,
                                        m.groups)
    else:
        out = F.linear(x, weight)
    return out if bias is None else out + bias


def _transpose(op, weight: Tensor, g: Tensor, in_shape) -> Tensor:
    if is_conv_nd(op):  # the transpose of the forward, by autograd
        dummy = torch.zeros(in_shape, dtype=g.dtype, device=g.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_forward(op, dummy, weight, None), dummy, g)
        return grad
    if op.kind != "conv":
        return g.matmul(weight)
    p = op.params
    if isinstance(p["padding"], str):  # "same"/"valid": autograd on a dummy input
        dummy = torch.zeros(in_shape, dtype=g.dtype, device=g.device, requires_grad=True)
        with torch.enable_grad():
            out = F.conv2d(dummy, weight, None, p["stride"], p["padding"], p["dilation"],
                           p["groups"])
            (grad,) = torch.autograd.grad(out, dummy, g)
        return grad
    return torch.nn.grad.conv2d_input(tuple(in_shape), weight, g, p["stride"], p["padding"],
                                      p["dilation"], p["groups"])


# -- the rules' terms ------------------------------------------------------------------------
def _pos(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.clamp(min=0)


def _neg(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.clamp(max=0)


def _add(*parts: Optional[Tensor]) -> Tensor:
    out = None
    for p in parts:
        if p is not None:
            out = p if out is None else out + p
    return out


def bounds_of(values, model, x: Tensor, title: str = "z^B") -> Tuple[Tensor, Tensor]:
    """z^B's lowest and highest input values, per channel: ``values["low"]`` and
    ``values["high"]``, else the normalised [0, 1] range of the model's preprocessing (a zoo
    model's mean and std)."""
    low, high = values.get("low"), values.get("high")
    if low is None or high is None:
        from ...data.zoo import model_info  # noqa: PLC0415  (data sits below the engine)

        pre = getattr(model_info(model), "preprocessing", None)
        if pre is None:
            raise ArgumentError(
                f"the z^B rule of {title!r} needs the input's bounds: this model "
                f"has no preprocessing facts; give Composite(low=..., high=...)")
        low = [(0 - m) / s for m, s in zip(pre.mean, pre.std)]
        high = [(1 - m) / s for m, s in zip(pre.mean, pre.std)]

    def channels(v):
        t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        return t.reshape(1, -1, *([1] * (x.dim() - 2))) if t.dim() == 1 else t

    return channels(low).expand_as(x), channels(high).expand_as(x)


@dataclass(frozen=True)
class LayerAt:
    """What a rule's term builder reads of one layer at the recorded input: the input ``x``,
    weight ``w`` and bias ``b`` (BatchNorms folded), the constants its composite gives the
    rule (``values``: epsilon, stabilizer, gamma, alpha, beta, low, high), and the layer's
    forward with given weights (``forward(x, w, b)``)."""

    op: object
    x: Tensor
    w: Tensor
    b: Optional[Tensor]
    values: Mapping[str, object]
    model: object
    title: str

    def forward(self, x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
        return _forward(self.op, x, w, b)

    def stabilize(self, z: Tensor) -> Tensor:
        """``z`` with the composite's stabiliser (zennit's default 1e-6)."""
        return stabilize(z, self.values["stabilizer"])


# A rule's terms: ``(groups, terms)`` at the recorded input, groups ``[(stabilised
# denominator, mask or None)]``, terms ``[(coef, input or None, weight, group)]``, over N images.
TermBuilder = Callable[[LayerAt], Tuple[List, List]]


def _epsilon(at: LayerAt):
    return [(stabilize(at.forward(at.x, at.w, at.b), at.values["epsilon"]), None)], \
        [(1.0, at.x, at.w, 0)]


def _alphabeta(at: LayerAt):
    alpha, beta = at.values["alpha"], at.values["beta"]
    x, w, b, f = at.x, at.w, at.b, at.forward
    xp, xn, wp, wn = _pos(x), _neg(x), _pos(w), _neg(w)
    groups = [(at.stabilize(f(xp, wp, _pos(b)) + f(xn, wn, None)), None)]
    terms = [(alpha, xp, wp, 0), (alpha, xn, wn, 0)]
    if beta:
        groups.append((at.stabilize(f(xp, wn, _neg(b)) + f(xn, wp, None)), None))
        terms += [(-beta, xp, wn, 1), (-beta, xn, wp, 1)]
    return groups, terms


def _gamma(at: LayerAt):
    """zennit's four products per side, in two: with ``x⁺W⁺ + x⁻W⁻ = (xW + |x||W|) / 2`` and
    ``x⁺W⁻ + x⁻W⁺ = (xW − |x||W|) / 2``, the denominators are ``z± = (1 + γ/2)·xW ± γ/2·|x||W|
    + b + γb±`` and the relevance ``(1 + γ/2)·x·Wᵀ(R/z) + γ/2·|x|·|W|ᵀ(±R/z)``, each output
    divided by the ``z`` of its sign (two forward and two transposed products, not eight)."""
    g, x, w, b, f = at.values["gamma"], at.x, at.w, at.b, at.forward
    y0, a = f(x, w, None), f(x.abs(), w.abs(), None)
    half = g / 2
    zp, zn = y0 + half * (y0 + a), y0 + half * (y0 - a)
    y = y0
    if b is not None:
        zp, zn, y = zp + b + g * _pos(b), zn + b + g * _neg(b), y0 + b
    negative = y < 0
    z = at.stabilize(torch.where(negative, zn, zp))
    mask = (y != 0).to(y)
    return [(z, mask), (torch.where(negative, -z, z), mask)], \
        [(1.0 + half, x, w, 0), (half, x.abs(), w.abs(), 1)]


def _flat(at: LayerAt):
    ones = torch.ones_like(at.w)
    return [(at.stabilize(at.forward(torch.ones_like(at.x), ones, None)), None)], \
        [(1.0, None, ones, 0)]


def _wsquare(at: LayerAt):
    w2, b = at.w * at.w, at.b
    return ([(at.stabilize(at.forward(torch.ones_like(at.x), w2, None if b is None else b * b)),
              None)], [(1.0, None, w2, 0)])


def _zbox(at: LayerAt):
    x, w, b, f = at.x, at.w, at.b, at.forward
    wp, wn = _pos(w), _neg(w)
    low, high = bounds_of(at.values, at.model, x, at.title)
    z = f(x, w, b) - f(low, wp, _pos(b)) - f(high, wn, _neg(b))
    return [(at.stabilize(z), None)], [(1.0, x, w, 0), (-1.0, low, wp, 0), (-1.0, high, wn, 0)]


def _identity(at: LayerAt):  # layer_reverse passes relevance through before asking for terms
    raise ArgumentError("the identity rule has no terms: relevance passes through unchanged")


TERMS: Dict[str, TermBuilder] = {"epsilon": _epsilon, "alphabeta": _alphabeta, "gamma": _gamma,
                                 "flat": _flat, "wsquare": _wsquare, "zbox": _zbox,
                                 "identity": _identity}
"""Each LRP rule of :mod:`deconvviz.method_table`'s vocabulary -> its term builder."""


def _identity_reverse(op, s: Tensor, ctx) -> List:
    """The identity rule: the relevance on the output is the input's, where both have one
    size (Captum's ``IdentityRule``)."""
    in_shape = layer_input(op, ctx).shape
    if in_shape[1:].numel() != s.shape[1:].numel():
        raise UnsupportedOpError(
            f"the identity rule cannot pass relevance through {op.label} at {op.where}: its "
            f"input ({list(in_shape[1:])}) and output ({list(s.shape[1:])}) differ in size")
    return [(op.inputs[0], s.reshape(s.shape[0], *in_shape[1:]))]


def check_terms() -> None:
    """Every rule of the method table has a term builder (checked when this module loads)."""
    missing = [name for name in method_table.lrp_rules() if name not in TERMS]
    if missing:
        raise ImportError(f"LRP rule(s) {', '.join(missing)} of deconvviz.method_table have no "
                          f"term builder in {__name__}.TERMS")


check_terms()


def register_terms(name: str, builder: TermBuilder) -> None:
    """Add the term builder of a new rule (:func:`deconvviz.engine.register_lrp_rule`)."""
    if name in TERMS:
        raise ArgumentError(f"LRP rule {name!r} has a term builder already")
    TERMS[name] = builder


def _terms(rule, op, ctx, composite):
    """``(groups, terms)`` of ``rule`` (``(rule or preset name, the layer's own parameters)``)
    on the layer ``op``."""
    rule, values = rule
    x, w, b = _affine(op, ctx)
    kind, _ = method_table.resolve_rule(rule)
    builder = TERMS.get(kind.name)
    if builder is None:
        raise ArgumentError(f"LRP rule {kind.name!r} has no term builder: add it with "
                            f"deconvviz.engine.register_lrp_rule")
    return builder(LayerAt(op, x, w, b, composite.parameters(rule, values), ctx.traced.model,
                           composite.title))


def _prepared(rule, op, ctx, composite):
    cache = ctx.rec.cache
    key = ("lrp", composite.name, rule[0], op.name)
    if key not in cache:
        groups, terms = _terms(rule, op, ctx, composite)
        # a modified input that is zero everywhere adds exactly zero: skip its term
        terms = [t for t in terms if t[1] is None or bool(t[1].any())]
        in_shape = layer_input(op, ctx).shape
        cache[key] = (groups, terms, in_shape)
    return cache[key]


def layer_reverse(rule, op, s: Tensor, ctx, composite) -> List:
    """Relevance ``s`` (``[N*K, ...]`` on the layer's output) to its input, by ``rule``
    (``(rule or preset name, the layer's own parameters)``, or a name)."""
    rule = (rule, {}) if isinstance(rule, str) else rule
    if method_table.resolve_rule(rule[0])[0].name == "identity":
        return _identity_reverse(op, s, ctx)
    groups, terms, in_shape = _prepared(rule, op, ctx, composite)
    n = in_shape[0]
    k = s.shape[0] // n
    s4 = s.reshape(n, k, *s.shape[1:])
    grads = []
    for den, mask in groups:
        g = s4 / den[:, None] if mask is None else s4 * (mask / den)[:, None]
        grads.append(g.reshape(s.shape))
    full = (n * k, *in_shape[1:])
    out = None
    for coef, inp, weight, group in terms:
        t = _transpose(op, weight.to(s.dtype), grads[group], full)
        if inp is not None:
            t = (t.reshape(n, k, *in_shape[1:]) * inp[:, None]).reshape(full)
        t = t if coef == 1.0 else t * coef
        out = t if out is None else out + t
    if out is None:
        out = s.new_zeros(full)
    return [(op.inputs[0], out)]
