"""Methods as rule sets: what differs between reverse-pass methods, and nothing else.

Every op kind's registered rule (:mod:`deconvviz.engine.ops`) is the op's exact transpose where
the op is linear, and unpooling through the switches for max-pools (which is also the
max-pool's gradient). A method names the rules of the ops where methods differ (ReLU, local
response normalisation). To add a method, add a :class:`~deconvviz.engine.rules.RuleSet`
here and register it in :data:`METHODS`.

========================  ==================================  ===============================
method                    ReLU                                local response normalisation
========================  ==================================  ===============================
``deconvnet``             ``relu(signal)``                    passed through (the paper)
``guided``                ``relu(signal) * (input > 0)``      its derivative
``gradient``              ``signal * (input > 0)``            its derivative
========================  ==================================  ===============================
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import method_table
from .rules import RuleSet

__all__ = ["DECONVNET", "GUIDED", "GRADIENT", "METHODS", "get_method", "register_method",
           "unregister_method"]


def _rectify(op, s, ctx):
    return [(op.inputs[0], F.relu(s))]


def _pass_through(op, s, ctx):
    return [(op.inputs[0], s)]


DECONVNET = RuleSet(
    name="deconvnet",
    title="deconvnet",
    overrides={
        "relu": (_rectify, "rectify the signal coming down: relu(signal)"),
        # The clip at 6, like the ReLU's mask, is forward state the deconvnet does not use.
        "relu6": (_rectify, "rectify the signal coming down: relu(signal)"),
        "lrn": (_pass_through, "identity (the paper's deconvnet passes contrast "
                               "normalisation)"),
    },
)
"""Zeiler & Fergus (2013): ReLUs rectify the signal coming down (the forward mask is not
used), max-pools unpool through the switches, every linear op applies its transpose, and
local response normalisation is passed through."""



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


_LRN_DERIVATIVE = (_lrn_derivative, "its derivative at the recorded input", {"input"})

GUIDED = RuleSet(
    name="guided",
    title="guided backprop",
    overrides={
        "relu": (_guided_relu, "rectify the signal and mask by the forward input: "
                               "relu(signal) * (input > 0)", {"input"}),
        "relu6": (_guided_relu6, "rectify the signal and mask by the linear part: "
                                 "relu(signal) * (0 < input < 6)", {"input"}),
        "lrn": _LRN_DERIVATIVE,
    },
)
"""Guided backpropagation (Springenberg et al., 2015): at every ReLU the signal coming down
is rectified and masked by where the ReLU's forward input was positive; every other op
(local response normalisation included) uses its true gradient."""

GRADIENT = RuleSet(
    name="gradient",
    title="gradient",
    overrides={
        "relu": (_relu_gradient, "mask by the forward input: signal * (input > 0)", {"input"}),
        "relu6": (_relu6_gradient, "mask by the linear part: signal * (0 < input < 6)",
                  {"input"}),
        "lrn": _LRN_DERIVATIVE,
    },
)
"""The plain gradient: every op, the ReLU included, uses its true gradient."""

METHODS: Dict[str, RuleSet] = {m.name: m for m in (DECONVNET, GUIDED, GRADIENT)}
"""The reverse passes' rule sets, by method name (their names, titles and display conventions
are in :mod:`deconvviz.method_table`)."""


def get_method(name: str) -> RuleSet:
    """The rule set of a reverse-pass method, by name; any other name is refused, naming the
    reverse-pass methods."""
    method_table.check(name, method_table.REVERSE)
    return METHODS[name]


def register_method(rules: RuleSet, *, display: str = "signed",
                    explains: Sequence[str] = method_table.TARGETS,
                    summary: str = "") -> RuleSet:
    """Add a reverse-pass method: its rule set here, its name and title (``rules.name``,
    ``rules.title``), display convention and targets to :mod:`deconvviz.method_table`.

    Examples:
        >>> register_method(RuleSet(name="mine", title="my method", overrides={...}))
        >>> Projector(model, method="mine")  # and --method mine, attribute(..., "mine")
    """
    method_table.register(method_table.Method(
        rules.name, rules.title, method_table.REVERSE, display, tuple(explains),
        summary=summary))
    METHODS[rules.name] = rules
    return rules


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method`."""
    method_table.unregister(name)
    METHODS.pop(name, None)
