"""The steps of a layer's reverse pass: each op from the layer down to the input with the
rule the method gives it (refused where it has none), and where the receptive-field cone stops
(the first op through which no local window passes; for a ViT's tokens, the attention that
lets each token see the whole image).

These functions take the :class:`~deconvviz.engine.projector.Projector` they build for
(``net``): its method, trace and measured layers.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ...errors import ArgumentError
from ..catalogue.ops import fold_batchnorms
from .graph import Op
from .layers import mixing_op, whole_image
from .layout import acts_per_position, channels_last_nodes
from .recording import token_grids
from .reverse import ReversePass, ReverseStep, refuse, supported_rule

__all__ = ["build_reverse_pass"]


def build_reverse_pass(net, layer: str) -> ReversePass:
    """The steps of ``net``'s method from ``layer`` down to the input (see
    :meth:`~deconvviz.engine.projector.Projector.reverse_pass`)."""
    alias, path, node = net._resolve(layer)
    ops = net.traced.path_to_input(net.traced.ops[node].node,
                                   lambda op: _reaches(net.method, op))
    if net.traced.input_node not in {op.node for op in ops}:
        raise ArgumentError(f"layer {layer!r} does not depend on the input image")
    steps = []
    missing = [op for op in reversed(ops) if op.kind != "input"
               and net.method.rule_of(op) is None]
    if missing:
        refuse(net.method, missing, layer)
    for op in reversed(ops):
        if op.kind == "input":
            continue
        rule = supported_rule(net.method, op, layer)
        steps.append(ReverseStep(op, rule.description))
    stop, reason = _token_cone(net, node, layer)
    return ReversePass(layer, path, tuple(steps), fold_batchnorms([s.op for s in steps]),
                       net.method, stop or _cone_stop(net.method, steps), reason)


def _token_cone(net, node: str, layer: str) -> Tuple[Optional[Op], Optional[str]]:
    """For a ViT's token layer: where its tokens start to see the whole image (the
    attention) and why the cone is not used; ``(None, None)`` for any other layer."""
    try:
        measured = net._measured(net.input_size)
    except ArgumentError:  # the model does not run at its own size: no tokens found
        return None, None
    grid = token_grids(net.traced, measured.shapes).get(node)
    if grid is None:
        return None, None
    op = mixing_op(net.traced, measured.geometry, node)
    if op is None:
        size = measured.geometry[node].size
        return net.traced.ops[node], (
            f"each token of layer {layer!r} sees its patch ({size[0]}x{size[1]} px), but "
            f"the cone does not follow tokens: every projection runs the full-size pass")
    return op, whole_image(layer, op, grid) + "; every projection runs the full-size pass"


def _reaches(method, op: Op):
    rule = None if op.kind == "input" else method.rule_of(op)
    return rule.inputs_reached(op) if rule is not None else op.inputs


def _cone_stop(method, steps) -> Optional[Op]:
    """The first op on the way down through which no local window passes (the cone then
    is the whole image), ``None`` where each op has one."""
    last = channels_last_nodes(reversed([s.op for s in steps]))
    for step in steps:
        local = acts_per_position(step.op, last)
        if local is False or (local is None
                              and method.rule_of(step.op).window is None):
            return step.op
    return None
