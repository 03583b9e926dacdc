"""Relevance maximisation (Achtibat et al. 2023): a scan's second ranking of each unit's images.

Beside the strongest activations, ``scan(..., rank="relevance")`` keeps each unit's top
images by the unit's *relevance* for each image's predicted class (or a given class): the
channel's LRP relevance summed over positions, as a share of the image's total absolute
relevance at the layer (zennit-crp's convention), at most one hit per image, at the
position where the channel's relevance is largest (the reference patch). It costs one
batched relevance pass per batch of images: a forward pass and the LRP pass down to the
shallowest scanned layer (:func:`~deconvviz.analyses.crp.layer_relevances`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from ..engine import Projector
from .crp import layer_relevances

__all__ = ["RANKS", "RelevanceRanker"]

RANKS = ("activation", "relevance")


class RelevanceRanker:
    """Each batch's relevance candidates, in the scan's candidate format."""

    def __init__(self, model: nn.Module, layers: Sequence[str], target: Optional[int] = None,
                 method: str = "lrp"):
        self.net = Projector(model, method=method)
        self.layers, self.target = list(layers), target

    def meta(self) -> dict:
        return {"method": self.net.method.name,
                "target": "predicted" if self.target is None else int(self.target)}

    def candidates(self, x: Tensor, indices: Tensor) -> Dict[str, Dict[str, Tensor]]:
        """``layer -> {values, images, ys, xs, runner_ups}`` as ``[C, B]`` tensors: each
        image's relevance share per unit (not positive: an empty slot) and where it peaks."""
        found = layer_relevances(self.net, x, self.layers, self.target)
        out = {}
        for layer, rel in found.items():
            share = rel.share  # [B, C]
            b, c = share.shape
            maps = rel.relevance.reshape(b, c, -1)
            pos = maps.argmax(dim=2)
            width = rel.relevance.shape[-1] if rel.relevance.dim() == 4 else 1
            images = indices.to(share.device).reshape(b, 1).expand(b, c)
            positive = share > 0
            out[layer] = {"values": torch.where(positive, share, float("-inf")).T,
                          "images": torch.where(positive, images, -1).T,
                          "ys": (pos // width).T, "xs": (pos % width).T,
                          "runner_ups": torch.full_like(share, float("-inf")).T}
        return out
