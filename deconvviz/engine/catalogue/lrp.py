"""Layer-wise relevance propagation (LRP) as rule sets on the engine: composites as data.

A :class:`~deconvviz.method_table.Composite` (data, in the method table, as are the rules'
names, titles and parameters) names the rule of each kind of layer with weights (the first
layer, the other convolutions, the linear layers; the rules' term builders are in
:mod:`deconvviz.engine.catalogue.lrp_layers`) and its constants; :func:`relevance_method` turns it into a
:class:`~deconvviz.engine.catalogue.rules.RuleSet`, which :func:`~deconvviz.engine.register_method`
makes a method like any other (``--method``, ``dv.attribute``, ``compare``, ``sanity``). The
rest of the graph needs no per-architecture code:

- pointwise activations (ReLU, ReLU6, SiLU, GELU, Tanh, Sigmoid, Softplus, SELU, ...: every
  one, as zennit's and Captum's pass rule), local response normalisation, identities,
  reshapes and scalings by a constant pass relevance through unchanged;
- LayerNorm, GroupNorm and RMSNorm take AttnLRP's rule (:mod:`deconvviz.engine.catalogue.norms`):
  the ε rule on the affine map they are with the standard deviation held constant;
- attention takes the composite's ``attention`` rule
  (:mod:`deconvviz.engine.catalogue.lrp_attention`): CP-LRP's (the default: the softmax is a
  constant of the input, Ali et al. 2022, so relevance goes down the values) or AttnLRP's
  (the softmax's linearisation and the uniform rule); a ``matmul`` of two other signals
  gives each factor half (AttnLRP's uniform rule);
- a max-pool passes it to its winner (unpooling through the switches: its gradient);
- an average pool (adaptive or not) and a mean are linear layers under the z-rule
  (zennit's ``Norm``): ``x · Jᵀ(R / y)``;
- an addition splits relevance in proportion to each input's contribution (the z-rule on
  the sum: ``R_i = z_i R / Σz``; a constant term absorbs its share, as a bias does);
- a concatenation splits by channels; an index or a pad takes its transpose;
- a squeeze-excitation gate is the recorded constant it is for the image: relevance goes
  down the gated factor unchanged, none into the gate; a product of two signals that is not
  a gate gives each factor half;
- BatchNorm folds into the adjacent convolution, before or after it, from the graph
  (:func:`~deconvviz.engine.catalogue.lrp_layers.fold_partner`); a BatchNorm with no convolution
  next to it is an affine layer under the ε rule;
- every other op autograd can differentiate (permute, division) takes the z-rule of its
  linearisation at the recorded point, ``x · Jᵀ(R / y)`` for each input (exact LRP-0 for a
  linear op).

A class's relevance is seeded with its logit (LRP's convention: the heatmap sums to the
logit when relevance is conserved), a unit's with its activation.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ...errors import ArgumentError
from ...method_table import COMPOSITES, RULE_METHODS, Composite, resolve_rule
from .lrp_attention import MATMULS, AttentionSplit, SoftmaxHeld, holds_softmax, softmax_factor
from .lrp_layers import (
    TERMS,
    fold_partner,
    is_conv_nd,
    is_first_layer,
    layer_reverse,
    stabilize,
)
from .norms import detached_norm
from .ops_common import _unbroadcast, _vjp
from .pointwise import EXACT_VJP, _run, gate_factor, vjp_at
from .rules import RuleSet, get_rule

__all__ = ["Composite", "relevance_method", "rule_for", "COMPOSITES", "RULE_METHODS"]


def rule_for(composite: Composite, op, traced) -> Tuple[str, Dict[str, float]]:
    """The rule (or preset) name ``composite`` gives the layer ``op``, with the parameters
    the layer's own entry sets (``by_name``, ``by_type``; none otherwise)."""
    types = [t.__name__ for t in type(op.module).__mro__] if op.module is not None else []
    mapped = composite.mapped_rule(op.where, types)
    if mapped is not None:
        return mapped
    if composite.first is not None and is_first_layer(op, traced):
        return composite.first, {}
    return (composite.conv if op.kind == "conv" or is_conv_nd(op) else composite.linear), {}


# -- the other ops' relevance rules ---------------------------------------------------------
def _pass(op, s, ctx):
    return [(op.inputs[0], s)]


def _nk(s, n):
    return s.reshape(n, s.shape[0] // n, *s.shape[1:])


def _z_linear(op, s, ctx, composite):
    """A linear op without weights (average pool, mean) under the z-rule: ``x·Jᵀ(R/y)``."""
    x = _input(op, ctx)
    key = ("lrp-z", composite.name, op.name)
    if key not in ctx.rec.cache:
        with torch.no_grad():
            y = vjp_free_run(op, x)
        ctx.rec.cache[key] = stabilize(y, composite.stabilizer)
    den = ctx.rec.cache[key]
    n = x.shape[0]
    g = (_nk(s, n) / den[:, None]).reshape(s.shape)
    ((node, back),) = _vjp(op, g, ctx)
    return [(node, (_nk(back, n) * x[:, None]).reshape(back.shape))]


def vjp_free_run(op, x):
    """Run a one-input op forward on ``x`` (its other arguments as traced)."""
    import torch.fx as fx

    args = fx.node.map_arg(op.node.args, lambda n: x)
    kwargs = fx.node.map_arg(op.node.kwargs, lambda n: x)
    if op.node.op == "call_module":
        return op.module(*args, **kwargs)
    if op.node.op == "call_method":
        return getattr(args[0], op.node.target)(*args[1:], **kwargs)
    return op.node.target(*args, **kwargs)


def _is_mean(op) -> bool:
    return op.node.target in (torch.mean, "mean")


def _sum_rule(op, s, ctx, composite):
    """The z-rule on a sum: each input's share of the output, ``z_i R / y`` (a constant
    term keeps its own share, as a bias does)."""
    values = ctx.rec.arguments[op.name]
    env = {}
    for node in _arg_nodes(op):
        value = values[node.name] if node.name in values else ctx.rec.constants[node.name]
        env[node] = value.clone() if isinstance(value, torch.Tensor) else value
    with torch.no_grad():
        y = _run(op, env)  # on copies: an in-place add must not change the recording
    n = y.shape[0]
    g = _nk(s, n) / stabilize(y, composite.stabilizer)[:, None]
    out = []
    for node, sign in op.params["signs"]:
        part = values[node.name] * sign
        if part.dim() < g.dim() - 1 or part.shape[0] != n:  # broadcast over the batch
            part = part.expand(n, *part.shape[-(g.dim() - 2):]) if part.dim() else part
        out.append((node, _unbroadcast((g * part[:, None]).reshape(-1, *g.shape[2:]),
                                       ctx.shape(node))))
    return out


def _arg_nodes(op):
    import torch.fx as fx

    found = []
    fx.node.map_arg((op.node.args, op.node.kwargs), lambda n: found.append(n) or n)
    return list(dict.fromkeys(found))


def _input(op, ctx):
    """The op's recorded first input (over the N images)."""
    if op.name in ctx.rec.inputs:
        return ctx.rec.inputs[op.name]
    return ctx.rec.arguments[op.name][op.inputs[0].name]


def _gate_or_halves(op, s, ctx):
    gate = gate_factor(op)
    if gate is None:  # two signals, no gate: each factor gets half
        a, b = op.node.args[:2]
        return [(a, _unbroadcast(s * 0.5, ctx.shape(a))), (b, _unbroadcast(s * 0.5, ctx.shape(b)))]
    other = next(n for n in op.node.args[:2] if n is not gate)
    return [(other, _unbroadcast(s, ctx.shape(other)))]


def _gated_reaches(op):
    gate = gate_factor(op)
    return [n for n in op.inputs if n is not gate]


def _batchnorm(op, s, ctx, composite):
    side, _ = fold_partner(op, ctx.traced)
    if side is not None:  # its scale and shift ride on the convolution next to it
        return [(op.inputs[0], s)]
    bn = op.module
    x = ctx.rec.inputs[op.name]
    with torch.no_grad():
        y = bn(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    from .ops import batchnorm_scale

    z = x * batchnorm_scale(bn).reshape(shape)
    n = x.shape[0]
    g = _nk(s, n) / stabilize(y, composite.epsilon)[:, None]
    return [(op.inputs[0], (g * z[:, None]).reshape(s.shape))]


def _norm_rule(op, s, ctx, composite):
    """AttnLRP's rule for LayerNorm, GroupNorm and RMSNorm: the ε rule on the affine map
    the normalisation is with its standard deviation held at the recorded input's."""
    values = ctx.arguments_of(op)
    x = values[op.inputs[0]]
    f = detached_norm(op, values, x)
    with torch.no_grad():
        y = f(x)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(leaf), leaf, s / stabilize(y, composite.epsilon))
    return [(op.inputs[0], g * x)]


def _z_fallback(op, s, ctx, composite):
    """The z-rule on the op's linearisation at the recorded point: ``x_i · J_iᵀ(R / y)``."""
    values = ctx.arguments_of(op)

    def signal(y):  # R / y, from the output of the vector-Jacobian product's own forward
        if isinstance(s, dict):  # several outputs (chunk, split): each item's R / y
            return {i: g / stabilize(y[i], composite.stabilizer)
                    if isinstance(y[i], torch.Tensor) and y[i].is_floating_point() else g
                    for i, g in s.items()}
        return s / stabilize(y, composite.stabilizer)
    conservative = composite.attention == "conservative"
    inside = (SoftmaxHeld() if conservative else AttentionSplit()) if holds_softmax(op) \
        else contextlib.nullcontext()
    with inside:  # an attention inside the op: CP-LRP holds its softmax, AttnLRP splits
        grads = vjp_at(op, values, signal, ctx)
    attention = softmax_factor(op) if conservative else None
    if attention is not None:  # a traced attention under CP-LRP: down the values only
        return [(node, g * values[node]) for node, g in grads if node is not attention]
    share = 0.5 if op.node.target in MATMULS and len(grads) == 2 else 1.0  # AttnLRP's uniform
    return [(node, g * values[node] * share) for node, g in grads]


def _masked_branch(op):
    """The one branch from the image of ``torch.where(mask, x, c)`` (or ``(mask, c, x)``)
    whose other branch is a constant, else ``None``: such a mask is a gate, as a ReLU is."""
    if op.node.op == "call_function" and op.node.target is torch.where:
        branches = op.node.args[1:3]
    elif op.node.op == "call_method" and op.node.target == "where":
        branches = (op.node.args[0], op.node.args[2] if len(op.node.args) > 2 else None)
    else:
        return None
    signals = [b for b in branches if b in op.inputs]
    return signals[0] if len(branches) == 2 and len(signals) == 1 else None


_MAX_POOLS_ND = (torch.nn.MaxPool1d, torch.nn.MaxPool3d)


def _is_max_pool_nd(op) -> bool:
    if op.node.op == "call_module":
        return isinstance(op.module, _MAX_POOLS_ND) and not op.module.return_indices
    return op.node.target in (F.max_pool1d, F.max_pool3d, torch.max_pool1d, torch.max_pool3d)


def relevance_method(composite: Composite) -> RuleSet:
    """The rule set of an LRP composite (register it with
    :func:`~deconvviz.engine.register_method` to use it by name)."""
    c = composite
    missing = [r for r in c.rules() if resolve_rule(r)[0].name not in TERMS]
    if missing:
        raise ArgumentError(f"LRP rule(s) {', '.join(missing)} of {c.name!r} have no term "
                            f"builder: add each with deconvviz.engine.register_lrp_rule")

    def layer(op, s, ctx):
        return layer_reverse(rule_for(c, op, ctx.traced), op, s, ctx, c)

    def transpose(op, s, ctx):
        return _z_linear(op, s, ctx, c) if _is_mean(op) else _vjp(op, s, ctx)

    passing = "relevance passes through unchanged"
    layers = (f"first layer: {c.first}; " if c.first else "") + f"others: {c.conv}"
    overrides: Dict[str, object] = {
        "conv": (layer, f"LRP {layers} (BatchNorm folded in)", {"input"}),
        "linear": (layer, f"LRP {c.linear}" + (f" ({c.first} if it reads the image)"
                                               if c.first else ""), {"input"}),
        "relu": (_pass, passing),
        "relu6": (_pass, passing),
        "activation": (_pass, passing),
        "pointwise": (_pass, passing + " (zennit's and Captum's pass rule)"),
        "lrn": (_pass, passing + " (as in the deconvnet)"),
        "norm": (lambda op, s, ctx: _norm_rule(op, s, ctx, c),
                 "AttnLRP's rule: the ε rule on x -> (x - mean) / std * w + b with std a "
                 "constant of the recorded input (RMSNorm: relevance passes through)",
                 {"arguments"}),
        "scale": (_pass, passing),
        "batchnorm": (lambda op, s, ctx: _batchnorm(op, s, ctx, c),
                      "folded into the convolution next to it; else the ε rule", {"input"}),
        "avgpool": (lambda op, s, ctx: _z_linear(op, s, ctx, c),
                    "z-rule: x * (transpose of the pool)(R / y)", {"input"}),
        "adaptive_avgpool": (lambda op, s, ctx: _z_linear(op, s, ctx, c),
                             "z-rule: x * (transpose of the pool)(R / y)", {"input"}),
        "transpose": (transpose, "mean: the z-rule; index, pad: transpose", {"arguments"}),
        "add": (lambda op, s, ctx: _sum_rule(op, s, ctx, c),
                "z-rule on the sum: each input's share of the output", {"arguments"}),
        "product": replace(get_rule("product"), reverse=_gate_or_halves, reaches=_gated_reaches,
                           description="a gate is a recorded constant: relevance down the gated "
                                       "factor unchanged (no gate: half to each factor)"),
    }
    def other(op, s, ctx):
        if is_conv_nd(op):  # Conv1d, Conv3d: the composite's convolution rule, as in 2-D
            return layer(op, s, ctx)
        if _is_max_pool_nd(op):  # to the winner, as a 2-D max-pool's switches
            return vjp_at(op, ctx.arguments_of(op), s, ctx)
        kept = _masked_branch(op)
        if kept is not None:  # a threshold mask: relevance passes through, as ReLU's rule
            return [(kept, _unbroadcast(s, ctx.shape(kept)))]
        return _z_fallback(op, s, ctx, c)

    fallback = replace(EXACT_VJP, reverse=other,
                       description="Conv1d, Conv3d: the convolutions' rule; MaxPool1d, "
                                   "MaxPool3d: to the winner; torch.where(mask, x, "
                                   "constant): passes through, as ReLU; any other op: the "
                                   "z-rule on its linearisation at the recorded point: "
                                   "x * J^T(R / y)")
    return RuleSet(name=c.name, title=c.title, overrides=overrides, fallback=fallback,
                   relevance=True)
