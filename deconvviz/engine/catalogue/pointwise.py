"""Rules for today's CNNs: smooth activations, products of two signals, and every other op.

- ``activation``: the pointwise activations other than ReLU and ReLU6 (LeakyReLU, SiLU, GELU,
  Hardswish, Mish, ELU), modules and functions. Each method supplies its reverse
  (:mod:`deconvviz.engine.catalogue.methods`): the deconvnet rectifies the signal, guided backprop
  multiplies the rectified signal by the activation's derivative at the recorded input, the
  gradient multiplies the signal by it.
- ``pointwise``: the other pointwise functions (Tanh, Sigmoid, Softplus, SELU, CELU,
  Hardsigmoid, Hardtanh other than ReLU6's, Softsign, LogSigmoid, the shrinks, PReLU,
  Threshold). Their registered reverse is their derivative at the recorded input (what every
  op no rule claims takes), so the deconvnet, guided backprop and the gradient treat them as
  before; the LRP composites pass relevance through them unchanged.
- ``product``: a ``mul`` of two tensors that both come from the image (squeeze-excitation,
  gates). Its registered reverse is the product rule at the recorded factors; a factor that
  comes through a sigmoid or hardsigmoid (possibly reshaped) is the op's *gate*, which the
  deconvnet and guided backprop treat as the recorded constant it is for the image.
- :data:`EXACT_VJP`: not registered for any op kind; a method's ``fallback`` for every op no
  rule claims (LayerNorm, ``permute``, Sigmoid, ...): the op's exact vector-Jacobian product at
  the recorded forward point, by autograd. Ops autograd cannot differentiate (comparisons,
  ``argmax``, casts to integers) stay refused.

Reverse functions read the recorded forward state through the pass's context:
``ctx.input_of(op)`` (the first input) and ``ctx.arguments_of(op)`` (every tensor argument
from the image, laid out like the signals).
"""
from __future__ import annotations

import operator
from typing import Any, Dict, List, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import UnsupportedOpError, first_line
from .ops_common import _same_field, _same_window, _unbroadcast
from .rules import Rule, Unsupported, register_rule

__all__ = ["EXACT_VJP", "ACTIVATION_MODULES", "POINTWISE_MODULES", "GATE_MODULES", "vjp_at", "activation_vjp",
           "gate_factor"]

# -- running one traced op again, with autograd ---------------------------------------------


def _run(op, env: Dict[fx.Node, Any]):
    args = fx.node.map_arg(op.node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(op.node.kwargs, lambda n: env[n])
    if op.node.op == "call_module":
        return op.module(*args, **kwargs)
    if op.node.op == "call_method":
        return getattr(args[0], op.node.target)(*args[1:], **kwargs)
    return op.node.target(*args, **kwargs)


def vjp_at(op, values: Dict[fx.Node, Tensor], signal, ctx) -> List:
    """The vector-Jacobian product of ``op`` at the forward point ``values`` (graph node ->
    its recorded value; the op's inputs from the image laid out like ``signal``), as
    ``[(input node, signal), ...]`` for each input from the image. ``signal`` may be a
    function of the op's output (detached) that returns it: one forward pass serves both.

    Raises:
        UnsupportedOpError: where autograd cannot differentiate the op.
    """
    # Inputs that are not floating point (a mask) have no gradient: constants, as in autograd.
    leaves = {n: values[n].detach().requires_grad_(True) for n in dict.fromkeys(op.inputs)
              if isinstance(values[n], Tensor) and values[n].is_floating_point()}
    if not leaves and _all_tensors(values, op.inputs):
        return []  # only masks and indices come in (mask.float()): a constant, as in autograd
    with torch.enable_grad():
        # Clones: an in-place op (SiLU(inplace=True)) may not write into a leaf of autograd.
        env = {n: (leaves[n].clone() if n in leaves else v) for n, v in values.items()}
        try:
            out = _run(op, env)
            if callable(signal):
                signal = signal(_detached_output(out))
            if isinstance(signal, dict):  # an op returning a tuple: one signal per item
                # an item of integers (sort's indices) is a constant: no signal goes through
                items = [(out[i], g) for i, g in signal.items()
                         if not isinstance(out[i], Tensor) or out[i].is_floating_point()]
                if not items:
                    return []
                outs, grads_out = [o for o, _ in items], [g for _, g in items]
            else:
                outs, grads_out = [out], [signal]
            if not all(isinstance(o, Tensor) and o.requires_grad for o in outs):
                raise RuntimeError("its output does not depend differentiably on its input")
            grads = torch.autograd.grad(outs, list(leaves.values()), grads_out,
                                        allow_unused=True)
        except RuntimeError as exc:
            raise UnsupportedOpError(
                f"no {ctx.rules.title} rule for {op.label} at {op.where} (graph node "
                f"{op.name!r}): autograd cannot differentiate it ({first_line(exc)})") from None
    return [(n, g) for n, g in zip(leaves, grads) if g is not None]


def _detached_output(out):
    if isinstance(out, (tuple, list)):
        return type(out)(o.detach() if isinstance(o, Tensor) else o for o in out)
    return out.detach()


def _all_tensors(values, nodes) -> bool:
    return all(isinstance(values[n], Tensor) for n in nodes)


def _exact_vjp(op, s, ctx):
    return vjp_at(op, ctx.arguments_of(op), s, ctx)


# Ops whose output does not depend differentiably on their input: refused by every method (an
# index, a cast to integers). A comparison is not among them: it is a recorded constant (below).
_NOT_DIFFERENTIABLE_FUNCTIONS = {
    torch.argmax, torch.argmin, torch.argsort, torch.nonzero, torch.bucketize,
    torch.searchsorted, torch.floor_divide, operator.floordiv, operator.mod,
}
_NOT_DIFFERENTIABLE_METHODS = {
    "argmax", "argmin", "argsort", "nonzero", "long", "int", "byte", "item", "tolist",
    "numpy", "type", "floor_divide",
}


def _differentiable(op) -> bool:
    if op.params.get("refused"):
        return False
    if op.node.op == "call_function":
        return op.node.target not in _NOT_DIFFERENTIABLE_FUNCTIONS
    if op.node.op == "call_method":
        return op.node.target not in _NOT_DIFFERENTIABLE_METHODS
    return op.node.op == "call_module"


EXACT_VJP = Rule(
    kind="any other op",
    description="its exact vector-Jacobian product at the recorded forward point (autograd)",
    reverse=_exact_vjp, when=_differentiable, needs=frozenset({"arguments"}))
"""The fallback of the three methods: any op autograd can differentiate, at the recorded
point. It has no window, so a path through it runs full size (not in the cone)."""


# -- pointwise activations: each method supplies its own reverse ----------------------------
ACTIVATION_MODULES = (nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.ELU)
_ACTIVATION_FUNCTIONS = tuple(dict.fromkeys(
    (F.leaky_relu, F.leaky_relu_, F.silu, F.gelu, F.hardswish, F.mish, F.elu, F.elu_)))


def _parse_activation(call):
    extra = [n for n in _nodes((call.node.args, call.node.kwargs)) if n not in call.inputs]
    if extra:  # F.leaky_relu(x, computed_slope): the exact vector-Jacobian product takes it
        raise Unsupported(f"{call.name} with computed arguments")
    if call.kind == "module":
        return type(call.module).__name__, {}
    return f"{call.name} (functional)", {}


register_rule(Rule(
    kind="activation", description="the method's own rule", reverse=None,
    modules=ACTIVATION_MODULES, functions=_ACTIVATION_FUNCTIONS, parse=_parse_activation,
    window=_same_window, field=_same_field))


# -- the other pointwise functions: their derivative, except where a method says otherwise ---
# (the LRP composites pass relevance through them, as zennit's and Captum's pass rule does)
POINTWISE_MODULES = (nn.Tanh, nn.Sigmoid, nn.Softplus, nn.SELU, nn.CELU, nn.Hardsigmoid,
                     nn.Hardtanh, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink,
                     nn.Hardshrink, nn.PReLU, nn.Threshold)
_POINTWISE_FUNCTIONS = tuple(dict.fromkeys(
    (torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.softplus, F.selu, torch.selu, F.celu,
     torch.celu, F.hardsigmoid, F.hardtanh, F.softsign, F.logsigmoid, F.tanhshrink,
     F.softshrink, F.hardshrink, F.prelu, torch.prelu, F.threshold)))
_POINTWISE_METHODS = ("tanh", "tanh_", "sigmoid", "sigmoid_")


def _not_relu6(call) -> bool:
    """Every call of these, except a ``Hardtanh(0, 6)``: that one is ReLU6's."""
    if call.kind == "module" and type(call.module) is nn.Hardtanh:
        return (call.module.min_val, call.module.max_val) != (0.0, 6.0)
    if call.kind == "function" and call.target is F.hardtanh:
        bounds = (call.arg(1, "min_val", -1.0), call.arg(2, "max_val", 1.0))
        return not all(isinstance(b, (int, float)) for b in bounds) or \
            tuple(map(float, bounds)) != (0.0, 6.0)
    return True


def _parse_pointwise(call):
    label, params = _parse_activation(call)
    if call.kind == "module" and type(call.module) is nn.Hardtanh:
        label = f"Hardtanh({call.module.min_val}, {call.module.max_val})"
    return (f".{call.name}()" if call.kind == "method" else label), params


def activation_vjp(op, s, ctx) -> List:
    """The activation's vector-Jacobian product at its recorded input: ``f'(x) * s``."""
    return vjp_at(op, {op.inputs[0]: ctx.input_of(op)}, s, ctx)


register_rule(Rule(
    kind="pointwise", description="its exact vector-Jacobian product at the recorded input: "
                                 "f'(input) * signal",
    reverse=activation_vjp, modules=POINTWISE_MODULES, functions=_POINTWISE_FUNCTIONS,
    methods=_POINTWISE_METHODS, parse=_parse_pointwise, when=_not_relu6, window=_same_window,
    field=_same_field, needs=frozenset({"input"})))


def _nodes(args) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


# -- comparisons: masks, recorded constants -------------------------------------------------
_COMPARISON_FUNCTIONS = (operator.gt, operator.ge, operator.lt, operator.le, operator.eq,
                         operator.ne, torch.gt, torch.ge, torch.lt, torch.le, torch.eq, torch.ne,
                         torch.greater, torch.greater_equal, torch.less, torch.less_equal,
                         torch.logical_and, torch.logical_or, torch.logical_not,
                         torch.logical_xor, torch.isnan, torch.isfinite, torch.signbit,
                         operator.and_, operator.or_, operator.xor, operator.invert)
_COMPARISON_METHODS = ("gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "logical_and",
                       "logical_or", "logical_not", "logical_xor", "isnan", "isfinite",
                       "signbit", "bool")


def _parse_comparison(call):
    name = call.name if call.kind == "function" else f".{call.name}()"
    return f"{name}: a mask, recorded", {}


register_rule(Rule(
    kind="comparison",
    description="a recorded constant: no signal goes through it (as autograd: a mask has no "
                "gradient)",
    reverse=lambda op, s, ctx: [], reaches=lambda op: [],
    functions=tuple(dict.fromkeys(_COMPARISON_FUNCTIONS)), methods=_COMPARISON_METHODS,
    parse=_parse_comparison, window=_same_window, field=_same_field))


# -- products of two signals: gates --------------------------------------------------------
GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_GATE_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_GATE_METHODS = {"sigmoid", "sigmoid_"}
# Ops that only reshape or copy on the way from a gate to the product (x * s.view(n, c, 1, 1)).
_SHAPE_FUNCTIONS = {torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze}
_SHAPE_METHODS = {"view", "reshape", "expand", "expand_as", "flatten", "unsqueeze", "squeeze",
                  "contiguous", "clone", "float", "to", "type_as", "half", "double"}
_COMPARISONS = (set(_COMPARISON_FUNCTIONS), set(_COMPARISON_METHODS))


def _is_gate(node: fx.Node, root) -> bool:
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            module = root.get_submodule(str(node.target)) if root is not None else None
            if isinstance(module, GATE_MODULES):
                return True
            if not isinstance(module, (nn.Flatten, nn.Identity)):
                return False
        elif node.op == "call_function":
            if node.target in _GATE_FUNCTIONS or node.target in _COMPARISONS[0]:
                return True
            if node.target not in _SHAPE_FUNCTIONS:
                return False
        elif node.op == "call_method":
            if node.target in _GATE_METHODS or node.target in _COMPARISONS[1]:
                return True
            if node.target not in _SHAPE_METHODS:
                return False
        else:
            return False
        node = node.args[0] if node.args else None
    return False


def _two_signals(call) -> bool:
    factors = call.node.args[:2]
    return len(factors) == 2 and all(f in call.inputs for f in factors)


def _parse_product(call):
    factors = call.node.args[:2]
    gates = [i for i, f in enumerate(factors) if _is_gate(f, call.root)]
    if len(gates) == 1:
        return "mul by a gate (sigmoid branch or mask)", {"gate": gates[0]}
    return "mul of two signals", {"gate": None}


def _product(op, s, ctx):
    """Both factors at the recorded point: d(a*b) = s*b for a, s*a for b."""
    a, b = op.node.args[:2]
    values = ctx.arguments_of(op)
    # A factor of integers (indices, a mask) has no gradient: a constant, as in autograd.
    return [(n, _unbroadcast(s * values[other], ctx.shape(n))) for n, other in ((a, b), (b, a))
            if values[n].is_floating_point()]


def gate_factor(op) -> Optional[fx.Node]:
    """The factor of a ``product`` op that comes through a gate, if one does."""
    index = op.params.get("gate")
    return None if index is None else op.node.args[index]


def _gated_field(op, fields, in_shapes, out_shape):
    """A gate (a recorded constant for the deconvnet and guided backprop, as their cone has
    it) does not widen the field: the gated factor's field. Without a gate, the union."""
    gate = gate_factor(op)
    if gate is None:
        return _same_field(op, fields, in_shapes, out_shape)
    kept = [i for i, node in enumerate(op.inputs) if node is not gate]
    return _same_field(op, [fields[i] for i in kept], [in_shapes[i] for i in kept], out_shape)


register_rule(Rule(
    kind="product", description="both factors, at the recorded point: signal * b to a, "
                                "signal * a to b",
    reverse=_product, functions=(operator.mul, torch.mul, operator.imul),
    methods=("mul", "mul_"),
    parse=_parse_product, when=_two_signals, window=_same_window, field=_gated_field,
    needs=frozenset({"arguments"})))

