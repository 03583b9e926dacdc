"""Channels-last maps: where a model permutes its maps to ``[N, H, W, C]`` and back.

ConvNeXt applies LayerNorm and its MLP (two ``Linear`` layers around a GELU) to each position
of a permuted map, ``x.permute(0, 2, 3, 1)`` ... ``.permute(0, 3, 1, 2)``. Those ops act per
position, so the receptive-field cone can follow them: it keeps their signals in the usual
``[N, C, H, W]`` layout and hands each rule its windows in the op's own layout.

This module only reads the traced ops; it finds which nodes hold channels-last maps and which
ops on them act per position.
"""
from __future__ import annotations

from typing import Iterable, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .graph import Op

__all__ = ["TO_CHANNELS_LAST", "TO_CHANNELS_FIRST", "permute_dims", "channels_last_nodes",
           "acts_per_position"]

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)
# Op kinds that act on each position alone, whatever the layout (the channels are last).
_PER_POSITION_KINDS = {"relu", "relu6", "activation", "identity", "linear"}


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
