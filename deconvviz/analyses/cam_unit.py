"""A unit as what a CAM explains: its score (its activation at its strongest position, or its
map's sum) read from the model cut at its layer, the CAM layers checked to lie below it."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

from ..engine import Projector
from ..engine.passes.recording import features_first, forward_to
from ..errors import ArgumentError
from .cam_objective import Objective

__all__ = ["unit_objective", "cam_seed"]


def unit_objective(net: Projector, x: Tensor, target, layers: List[Tuple[str, tuple]]
                   ) -> Objective:
    """The :class:`Objective` of ``target`` (a unit: ``layer``, ``feature``, ``mode``) for the
    CAM layers ``layers`` (``(name, (module, node, ...))`` each), which must lie below it."""
    size = tuple(x.shape[-2:])
    unit = net.layer(target.layer, size).node
    below = {op.name for op in net.traced.path_to_input(net.traced.ops[unit].node)}
    for name, layer in layers:
        if layer[1] not in below:
            raise ArgumentError(f"a CAM at {name!r} cannot explain a unit of "
                                f"{target.layer!r}, which is not above it: choose a "
                                f"cam_layer below {target.layer!r}")
    read = forward_to(net.traced, [unit], size)
    node = net.traced.ops[unit].node.name
    reading = features_first(net.traced, [node], size=size).get(node)  # tokens, channels last
    return Objective(net.model, [], read=lambda batch: read(batch)[0],
                     seeds=cam_seed(net, x, target), node=node,
                     orient=reading.features if reading is not None else None)


def cam_seed(net: Projector, x: Tensor, target) -> Tensor:
    """A unit's score for a CAM, as a class's is its logit: the unit's activation at its
    strongest position on the unmasked image (``max``, the first on ties, as
    :func:`make_seeds`), or its map's sum (``map``). The seed is ones there, not the
    activation's value (which would rescale Score-CAM's softmax)."""
    act = net.record(x, target.layer).activations[target.layer]
    if not 0 <= target.feature < act.shape[1]:
        raise ArgumentError(f"feature {target.feature} is out of range for layer "
                            f"{target.layer!r}: valid features are 0 to {act.shape[1] - 1}")
    seeds = torch.zeros_like(act).reshape(*act.shape[:2], -1)
    if target.mode == "max":
        strongest = act[:, target.feature].reshape(act.shape[0], -1).argmax(1)
        seeds[torch.arange(act.shape[0]), target.feature, strongest] = 1.0
    else:
        seeds[:, target.feature] = 1.0
    return seeds.reshape(act.shape)
