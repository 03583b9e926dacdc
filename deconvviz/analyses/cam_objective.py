"""What a CAM explains, one number per image: a class's logit, or a unit of a layer.

A unit is read as everywhere else in deconvviz (:func:`deconvviz.attribute`'s unit target,
occlusion's): the layer's activations dotted with a seed fixed on the unmasked image (the
feature's maximum, or its sum over positions), so that a masked or ablated input is scored at
the same position as the image it came from.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Objective"]


class Objective:
    """A class logit (``classes``) or a unit (``read``, ``seeds``, ``node``).

    Args:
        model: the model.
        classes: each image's class.
        read: for a unit: ``batch -> [B, C, ...]`` the unit's layer (channels first).
        seeds: for a unit: ``[N, C, ...]``, each image's seed at that layer.
        node: for a unit: the layer's graph node name (Ablation-CAM's tail stops there).
        orient: for a unit: the node's raw value to channels first (a channels-last layer, a
            token layer on its patch grid); default: as it is.
    """

    def __init__(self, model: nn.Module, classes: Sequence[int],
                 read: Optional[Callable[[Tensor], Tensor]] = None,
                 seeds: Optional[Tensor] = None, node: Optional[str] = None,
                 orient: Optional[Callable[[Tensor], Tensor]] = None):
        self.model, self.classes = model, list(classes)
        self.read, self.seeds, self.node = read, seeds, node
        self.orient = orient if orient is not None else (lambda value: value)

    @property
    def is_unit(self) -> bool:
        return self.seeds is not None

    def all(self, batch: Tensor) -> Tensor:
        """``[N]``: row ``i`` of ``batch`` is (a variant of) image ``i``."""
        if not self.is_unit:
            rows = torch.arange(batch.shape[0], device=batch.device)
            return self.model(batch)[rows, torch.as_tensor(self.classes, device=batch.device)]
        return (self.read(batch) * self.seeds).flatten(1).sum(1)

    def value(self, batch: Tensor) -> Tensor:
        """What the objective reads of ``batch``: the logits, or the unit's layer."""
        return self.read(batch) if self.is_unit else self.model(batch)

    def pick(self, value: Tensor, i: int) -> Tensor:
        """``[B]`` of image ``i``'s objective from :meth:`value`'s output."""
        if not self.is_unit:
            return value[:, self.classes[i]]
        return (value * self.seeds[i:i + 1]).flatten(1).sum(1)

    def one(self, batch: Tensor, i: int) -> Tensor:
        """``[B]``: every row of ``batch`` is a variant of image ``i``."""
        return self.pick(self.value(batch), i)

    def of_tail(self, raw: Tensor, i: int) -> Tensor:
        """``[B]`` from what Ablation-CAM's tail returns (the node's raw value)."""
        return self.pick(self.orient(raw) if self.is_unit else raw, i)
