"""Methods as rule sets: what differs between reverse-pass methods, and nothing else.

Every op kind's registered rule (:mod:`deconvviz.engine.catalogue.ops`, :mod:`deconvviz.engine.catalogue.pointwise`)
is the op's exact transpose where the op is linear, unpooling through the switches for
max-pools (which is also the max-pool's gradient), and the exact vector-Jacobian product at
the recorded forward point for every other op autograd can differentiate (each method's
``fallback``). A method names the rules of the ops where methods differ. To add a method, add
a :class:`~deconvviz.engine.catalogue.rules.RuleSet` here and register it in :data:`METHODS`.

=============  ========================  ==============================  ===================  =====================
method         ReLU                      other activations f             LRN                  gate * x
=============  ========================  ==============================  ===================  =====================
``deconvnet``  ``relu(s)``               ``relu(s)``                     passed through       ``s * gate`` to x only
``guided``     ``relu(s) * (x > 0)``     ``f'(x) * relu(s)``             its derivative       ``s * gate`` to x only
``gradient``   ``s * (x > 0)``           ``f'(x) * s``                   its derivative       both factors
=============  ========================  ==============================  ===================  =====================

A gate (squeeze-excitation's sigmoid branch) is, for the deconvnet and guided backprop, the
recorded constant it is for the image, as BatchNorm's scale is: the signal goes down the
gated path only. Both keep the receptive-field cone local through it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F

from ... import method_table
from .lrp import relevance_method
from .lrp_layers import TermBuilder, register_terms
from .ops_common import _same_window, _unbroadcast
from .pointwise import EXACT_VJP, activation_vjp, gate_factor, vjp_at
from .rules import RuleSet, get_rule

__all__ = ["DECONVNET", "GUIDED", "GRADIENT", "METHODS", "get_method", "register_method",
           "unregister_method", "register_lrp_rule", "unregister_lrp_rule"]


def _rectify(op, s, ctx):
    return [(op.inputs[0], F.relu(s))]


def _pass_through(op, s, ctx):
    return [(op.inputs[0], s)]


def _through_gate(op, s, ctx):
    """The signal goes down the gated factor, times the recorded gate; not into the gate."""
    gate = gate_factor(op)
    if gate is None:
        return get_rule("product").reverse(op, s, ctx)
    other = next(n for n in op.node.args[:2] if n is not gate)
    return [(other, _unbroadcast(s * ctx.argument(op, gate), ctx.shape(other)))]


def _gated_reaches(op):
    gate = gate_factor(op)
    return [n for n in op.inputs if n is not gate]


def _gated_window(op, out, shapes):
    """Local where the gate is: the window passes to the gated factor; the gate must be one
    value per channel or a map of the factor's size."""
    gate = gate_factor(op)
    if gate is None:
        return _same_window(op, out, shapes)
    size, gate_shape = shapes[op.name][-2:], shapes.get(gate.name)
    if gate_shape is None or len(gate_shape) < 3 or gate_shape[-2:] not in ((1, 1), size):
        return None
    other = next(n for n in op.node.args[:2] if n is not gate)
    inner = shapes.get(other.name)
    return out if inner is not None and len(inner) >= 3 and inner[-2:] == size else None


_GATED_PRODUCT = replace(
    get_rule("product"), reverse=_through_gate, reaches=_gated_reaches, window=_gated_window,
    description="a gate (sigmoid branch) is a recorded constant: signal * gate down the "
                "gated factor only (no gate: both factors, as the gradient)")

DECONVNET = RuleSet(
    name="deconvnet",
    title="deconvnet",
    overrides={
        "relu": (_rectify, "rectify the signal coming down: relu(signal)"),
        # The clip at 6, like the ReLU's mask, is forward state the deconvnet does not use.
        "relu6": (_rectify, "rectify the signal coming down: relu(signal)"),
        # As for ReLU: the activation's shape is forward state the deconvnet does not use.
        "activation": (_rectify, "rectify the signal coming down: relu(signal)"),
        "lrn": (_pass_through, "identity (the paper's deconvnet passes contrast "
                               "normalisation)"),
        "product": _GATED_PRODUCT,
    },
    fallback=EXACT_VJP,
)
"""Zeiler & Fergus (2013): ReLUs (and every other pointwise activation) rectify the signal
coming down (the forward state is not used), max-pools unpool through the switches, every
linear op applies its transpose, local response normalisation is passed through, a gate is a
recorded constant, and every other op takes its exact vector-Jacobian product at the
recorded point."""



def _guided_relu(op, s, ctx):
    return [(op.inputs[0], F.relu(s) * (ctx.input_of(op) > 0))]


def _relu_gradient(op, s, ctx):
    return [(op.inputs[0], s * (ctx.input_of(op) > 0))]


def _linear_part(x):
    """Where ReLU6 passes its input through: 0 < x < 6."""
    return (x > 0) & (x < 6)


def _guided_relu6(op, s, ctx):
    return [(op.inputs[0], F.relu(s) * _linear_part(ctx.input_of(op)))]


def _relu6_gradient(op, s, ctx):
    return [(op.inputs[0], s * _linear_part(ctx.input_of(op)))]


def _lrn_derivative(op, s, ctx):
    """Local response normalisation's vector-Jacobian product at the recorded input."""
    x = ctx.input_of(op).detach().requires_grad_(True)
    with torch.enable_grad():
        if op.node.op == "call_module":
            y = op.module(x)
        else:
            args = fx.node.map_arg(op.node.args, lambda n: x)
            kwargs = fx.node.map_arg(op.node.kwargs, lambda n: x)
            y = op.node.target(*args, **kwargs)
        (grad,) = torch.autograd.grad(y, x, s)
    return [(op.inputs[0], grad)]


def _guided_activation(op, s, ctx):
    return vjp_at(op, {op.inputs[0]: ctx.input_of(op)}, F.relu(s), ctx)


_LRN_DERIVATIVE = (_lrn_derivative, "its derivative at the recorded input", {"input"})

GUIDED = RuleSet(
    name="guided",
    title="guided backprop",
    overrides={
        "relu": (_guided_relu, "rectify the signal and mask by the forward input: "
                               "relu(signal) * (input > 0)", {"input"}),
        "relu6": (_guided_relu6, "rectify the signal and mask by the linear part: "
                                 "relu(signal) * (0 < input < 6)", {"input"}),
        "activation": (_guided_activation, "the activation's derivative at the recorded "
                                           "input times the rectified signal: "
                                           "f'(input) * relu(signal)", {"input"}),
        "lrn": _LRN_DERIVATIVE,
        "product": _GATED_PRODUCT,
    },
    fallback=EXACT_VJP,
)
"""Guided backpropagation (Springenberg et al., 2015), generalised: at every pointwise
activation f the signal coming down is rectified and multiplied by f'(input) (for ReLU: masked
by where the forward input was positive); a gate is a recorded constant; every other op
(local response normalisation included) uses its true gradient at the recorded point."""

GRADIENT = RuleSet(
    name="gradient",
    title="gradient",
    overrides={
        "relu": (_relu_gradient, "mask by the forward input: signal * (input > 0)", {"input"}),
        "relu6": (_relu6_gradient, "mask by the linear part: signal * (0 < input < 6)",
                  {"input"}),
        "activation": (activation_vjp, "the activation's derivative at the recorded input: "
                                       "f'(input) * signal", {"input"}),
        "lrn": _LRN_DERIVATIVE,
    },
    fallback=EXACT_VJP,
)
"""The plain gradient: every op, the ReLU included, uses its true gradient (a product both
factors' at the recorded point)."""

METHODS: Dict[str, RuleSet] = {m.name: m for m in (DECONVNET, GUIDED, GRADIENT)}
"""The reverse passes' rule sets, by method name (their names, titles and display conventions
are in :mod:`deconvviz.method_table`); an LRP composite's is built from its entry there, on
first use."""
_BUILT_FROM: Dict[str, method_table.Composite] = {}


def get_method(name: str) -> RuleSet:
    """The rule set of a reverse-pass method, by name; any other name is refused, naming the
    reverse-pass methods."""
    method_table.check(name, method_table.REVERSE)
    composite = method_table.composites().get(name)
    if composite is not None and _BUILT_FROM.get(name) is not composite:
        METHODS[name] = relevance_method(composite)
        _BUILT_FROM[name] = composite
    return METHODS[name]


def register_method(rules: RuleSet, *, display: str = "signed",
                    explains: Sequence[str] = method_table.TARGETS,
                    summary: str = "") -> RuleSet:
    """Add a reverse-pass method: its rule set here, its name and title (``rules.name``,
    ``rules.title``), display convention and targets to :mod:`deconvviz.method_table`
    (an LRP composite is simpler as data: :func:`deconvviz.method_table.register_composite`).

    Examples:
        >>> register_method(RuleSet(name="mine", title="my method", overrides={...}))
        >>> Projector(model, method="mine")  # and --method mine, attribute(..., "mine")
    """
    method_table.register(method_table.Method(
        rules.name, rules.title, method_table.REVERSE, display, tuple(explains),
        summary=summary, relevance=rules.relevance))
    METHODS[rules.name] = rules
    return rules


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method` or
    :func:`~deconvviz.method_table.register_composite`."""
    method_table.unregister(name)
    METHODS.pop(name, None)


def register_lrp_rule(rule: method_table.LrpRule, terms: TermBuilder) -> None:
    """Add an LRP rule: its entry in the method table (name, title, parameters) and its term
    builder (``terms(at)`` -> ``(groups, terms)``, see
    :class:`~deconvviz.engine.catalogue.lrp_layers.LayerAt`). Composites then name it like any rule.

    Examples:
        >>> register_lrp_rule(LrpRule("mine", "mine", ("epsilon",)), my_terms)
        >>> register_composite(Composite("lrp_mine", "LRP mine", first=None, conv="mine",
        ...                              linear="mine"))
    """
    method_table.register_lrp_rule(rule)
    try:
        register_terms(rule.name, terms)
    except Exception:
        method_table.unregister_lrp_rule(rule.name)
        raise


def unregister_lrp_rule(name: str) -> None:
    """Remove a rule added with :func:`register_lrp_rule`."""
    from .lrp_layers import TERMS

    method_table.unregister_lrp_rule(name)
    TERMS.pop(name, None)


for _name in method_table.composites():  # the built-in composites' rule sets, built at import
    get_method(_name)
