"""Channels-last maps: where a model permutes its maps to ``[N, H, W, C]`` and back.

ConvNeXt applies LayerNorm and its MLP (two ``Linear`` layers around a GELU) to each position
of a permuted map, ``x.permute(0, 2, 3, 1)`` ... ``.permute(0, 3, 1, 2)``. Those ops act per
position, so the receptive-field cone can follow them: it keeps their signals in the usual
``[N, C, H, W]`` layout and hands each rule its windows in the op's own layout.

This module only reads the traced ops; it finds which nodes hold channels-last maps and which
ops on them act per position.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .graph import Op

__all__ = ["TO_CHANNELS_LAST", "TO_CHANNELS_FIRST", "CHANNELS_LAST", "permute_dims",
           "channels_last_nodes", "acts_per_position", "channel_axes_of", "no_channels"]

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


class _ChannelsLast:
    """How a channels-last map ``[N, H, W, C]`` is read channels first and handed back (the
    reading of :class:`~deconvviz.engine.passes.tokens.TokenGrid` for tokens)."""

    def features(self, x):
        return x.permute(TO_CHANNELS_FIRST)

    def layer(self, x, named=None):
        return x.permute(TO_CHANNELS_LAST)

    def __repr__(self) -> str:
        return "CHANNELS_LAST"


CHANNELS_LAST = _ChannelsLast()
# Op kinds that act on each position alone, whatever the layout (the channels are last).
_PER_POSITION_KINDS = {"relu", "relu6", "activation", "pointwise", "identity", "linear"}


def permute_dims(op: Op) -> Optional[Tuple[int, ...]]:
    """The dimensions of a ``permute`` op (``torch.permute``, ``x.permute``), else ``None``."""
    node = op.node
    if node.op == "call_function" and node.target is torch.permute:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dims")
    elif node.op == "call_method" and node.target == "permute":
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
    else:
        return None
    try:
        return tuple(int(d) for d in dims)
    except (TypeError, ValueError):  # computed dimensions
        return None


def _normalises_last_dim(op: Op) -> bool:
    if op.node.op == "call_module" and isinstance(op.module, nn.LayerNorm):
        return len(op.module.normalized_shape) == 1
    if op.node.op == "call_function" and op.node.target is F.layer_norm:
        shape = op.node.args[1] if len(op.node.args) > 1 else op.node.kwargs.get(
            "normalized_shape")
        return isinstance(shape, (list, tuple)) and len(shape) == 1
    return False


def channels_last_nodes(ops: Iterable[Op]) -> Set[str]:
    """The nodes (of ``ops``, in forward order) holding ``[N, H, W, C]`` maps: a permute's
    from ``[N, C, H, W]``, and what ops acting per position make of them."""
    last: Set[str] = set()
    for op in ops:
        if not op.inputs:
            continue
        permuted = [n.name in last for n in op.inputs]
        dims = permute_dims(op)
        if dims is not None:
            if dims == TO_CHANNELS_LAST and not any(permuted):
                last.add(op.name)
        elif all(permuted) and (op.kind in _PER_POSITION_KINDS or _normalises_last_dim(op)):
            last.add(op.name)
    return last


def acts_per_position(op: Op, last: Set[str]) -> Optional[bool]:
    """``None`` where no channels-last map is involved in ``op``; else whether the op acts
    on each position alone (so that the cone can follow it)."""
    permuted = [n.name in last for n in op.inputs]
    if op.name not in last and not any(permuted):
        return None
    dims = permute_dims(op)
    if dims == TO_CHANNELS_LAST and op.name in last:
        return True
    if dims == TO_CHANNELS_FIRST and all(permuted):
        return True
    return op.name in last


# -- which axis holds a layer's channels ------------------------------------------------------
# Op kinds that act on [N, C, H, W] maps.
_CHANNELS_FIRST_KINDS = {"conv", "maxpool", "avgpool", "adaptive_avgpool", "batchnorm", "lrn"}
# Op kinds whose output keeps its input's layout (channels where they were).
_KEEPS_LAYOUT = {"relu", "relu6", "activation", "pointwise", "lrn", "conv", "maxpool", "avgpool",
                 "adaptive_avgpool", "batchnorm", "identity", "add", "scale", "product",
                 "comparison", "cat", "transpose", "field"}


def channel_axes_of(ops: Iterable[Op], shapes, probe) -> Dict[str, Optional[int]]:
    """Node name -> the axis holding its channels (its features), ``None`` where it has none
    deconvviz can find. A layer's features are its channels whatever the memory layout.

    ``shapes``: every node's shape; ``probe``: their shapes for an input of another size
    (as far as the model could run at it). Channels keep their number while positions follow
    the input's size, so where exactly one axis keeps its size, it holds the channels. Where
    the probe cannot tell (maps pooled to a fixed size, a model that runs at one size only),
    the axis is followed from the op's inputs: ops that keep the layout keep it, ``permute``
    moves it, a ``Linear`` on the channels keeps them last, an op whose output has an input's
    shape keeps that input's.

    ``[N, C]``: axis 1. ``[N, C, H, W]``: 1; ``[N, H, W, C]`` (ConvNeXt's MLP, Swin's
    stages): 3. Tokens ``[N, T, D]`` (ViT), windows of tokens ``[N, G, P, C]`` (MaxViT, where
    two axes keep their size and none follows from the inputs) or any other rank: ``None``.
    Nodes that do not depend on the input (constants) are not in the result.
    """
    axes: Dict[str, Optional[int]] = {}
    for op in ops:
        shape = shapes.get(op.name)
        if op.kind == "input":
            axes[op.name] = 1
            continue
        if shape is None or not op.inputs:
            continue
        rank = len(shape)
        fixed = None
        other = probe.get(op.name)
        if rank == 4 and other is not None and len(other) == 4:
            fixed = [d for d in (1, 2, 3) if shape[d] == other[d]]
            if len(fixed) == 1:
                axes[op.name] = fixed[0]
                continue
        if rank == 4 and op.kind in _CHANNELS_FIRST_KINDS:
            axis: Optional[int] = 1  # a Conv2d, BatchNorm2d or 2-d pool's map, by definition
        else:
            axis = 1 if rank == 2 else _followed(op, shape, axes, shapes) if rank == 4 else None
        axes[op.name] = axis if fixed is None or axis in fixed else None
    return axes


def _followed(op: Op, shape, axes, shapes) -> Optional[int]:
    known = [(axes.get(n.name), shapes.get(n.name)) for n in op.inputs]
    dims = permute_dims(op)
    if dims is not None:
        return dims.index(known[0][0]) if known[0][0] in dims else None
    if op.kind == "linear":
        return 3 if known[0][0] == 3 else None
    # An input of unknown layout next to a known one (a residual branch through attention)
    # takes the known one's: elementwise ops need one layout.
    same_rank = {a for a, s in known if a is not None and s is not None and len(s) == 4}
    same_shape = {a for a, s in known if a is not None and s is not None
                  and tuple(s) == tuple(shape)}
    if op.kind in _KEEPS_LAYOUT and len(same_rank) == 1:
        return next(iter(same_rank))
    return next(iter(same_shape)) if len(same_shape) == 1 else None


def no_channels(layer: str, shape, constant: bool = False) -> str:
    """Why a layer's output has no features deconvviz can show, in one sentence."""
    dims = list(shape[1:])
    if constant:
        return (f"layer {layer!r} does not depend on the input image (it is computed from the "
                f"model's own constants), so it has no features of an image to show")
    if len(dims) == 2:
        return (f"layer {layer!r} outputs a sequence of {dims[0]} tokens of {dims[1]} values "
                f"([N, {dims[0]}, {dims[1]}]), and deconvviz found no patch grid for them in "
                f"the graph (a convolution whose map is flattened into tokens, learnt tokens "
                f"such as a class token concatenated before them, then ops that keep one row "
                f"per token), so they are not a map of channels it can show or project; use a "
                f"layer whose output is a map [N, C, H, W] or tokens on a patch grid")
    return (f"layer {layer!r} outputs {dims}, and deconvviz cannot tell which axis holds its "
            f"channels (its positions are regrouped, into windows or tokens, so no axis is a "
            f"row or a column of the image); use a layer whose output is a map "
            f"[N, C, H, W] or [N, H, W, C]")
