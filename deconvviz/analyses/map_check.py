"""Whether a map explains what it was seeded with: one check for every analysis that draws
maps of a class or a unit, so that a figure never draws a blank or a vanished answer at full
contrast (signed and heat-map scaling normalise every map, however small).

A map is seeded at the output (a class: 1 at its logit, or the logit itself for relevance
methods) or at a unit (its activation). :func:`check_map` compares the map with that seed:

- **numerically zero**: the largest ``|map|`` is at most :data:`ZERO_SHARE` of the seed's
  magnitude (or is exactly zero). Float32 keeps about 7 digits, so anything twelve orders
  below the seed is rounding, not an answer (GoogLeNet with random weights gives
  ``max |R| = 1.3e-36`` for a logit of order 1);
- **relevance not conserved** (relevance methods only, :func:`is_relevance`): the map's sum
  over the seed, ``sum(map) / seed``, is below :data:`RELEVANCE_KEPT` [0] or above
  :data:`RELEVANCE_KEPT` [1] in magnitude. LRP's rules conserve relevance up to what the
  biases and the epsilon stabiliser absorb, which legitimately moves the share by tens of
  per cent, or flips its sign where a bias carries the logit; only gross losses (a
  LayerNorm that LRP does not handle: ``-4.7e-10`` on ConvNeXt) or gains are flagged;
- **not finite**: a NaN or an infinity in the map.

The note is a short phrase a figure writes under the tile and a result keeps beside the map.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import method_table
from ..engine.catalogue.methods import get_method
from ..engine.passes.seeds import make_seeds
from ..engine.projector import Projector

__all__ = ["ZERO_SHARE", "RELEVANCE_KEPT", "check_map", "map_notes", "is_relevance",
           "seed_totals", "seed_word", "notes_for"]

ZERO_SHARE = 1e-12  # max |map| at or below this share of |seed|: numerically zero
RELEVANCE_KEPT = (1e-3, 10.0)  # |sum(map) / seed| outside these: relevance not conserved


def is_relevance(method: str) -> bool:
    """Whether ``method`` is a relevance method (LRP: its maps sum to the seed when
    relevance is conserved), as its rule set says."""
    if not method_table.get(method).is_reverse_pass:
        return False
    return bool(get_method(method).relevance)


def check_map(map: Tensor, seed_total: float, relevance: bool, *,
              what: str = "logit") -> Optional[str]:
    """A short note where ``map`` (one image's, any shape) does not explain its seed, else
    ``None``.

    Args:
        map: the map.
        seed_total: the seed's sum (the logit, 1 for a gradient of a class, a unit's
            activation).
        relevance: the map is relevance (its sum is compared with ``seed_total``).
        what: what the seed is, for the note (``"logit"``, ``"activation"``).

    Examples:
        >>> check_map(torch.zeros(3, 4, 4), 2.0, False)
        'numerically zero (max |map| 0, logit 2)'
        >>> check_map(torch.full((1, 2), 1e-9), 2.0, True)
        'relevance not conserved: the input holds 1e-09 of the logit'
    """
    values = map.detach().double()
    if values.numel() and not bool(torch.isfinite(values).all()):
        return "not finite (NaN or infinity in the map)"
    peak = float(values.abs().max()) if values.numel() else 0.0
    scale = abs(float(seed_total))
    if peak == 0.0 or peak <= ZERO_SHARE * scale:
        return f"numerically zero (max |map| {peak:.2g}, {what} {float(seed_total):.3g})"
    if relevance and scale > 0 and math.isfinite(scale):
        share = float(values.sum()) / float(seed_total)
        if not RELEVANCE_KEPT[0] <= abs(share) <= RELEVANCE_KEPT[1]:
            return f"relevance not conserved: the input holds {share:.2g} of the {what}"
    return None


def map_notes(maps: Tensor, seed_totals: Sequence[float], relevance: bool, *,
              what: str = "logit") -> List[Optional[str]]:
    """:func:`check_map` for each image of ``maps`` ``[N, ...]`` with its seed's sum."""
    return [check_map(m, s, relevance, what=what) for m, s in zip(maps, seed_totals)]


def seed_totals(model: nn.Module, x: Tensor, method: str, target, *,
                net: Optional[Projector] = None,
                logits: Optional[Tensor] = None) -> List[float]:
    """The sum of the seed each image's map of ``target`` (a resolved
    :class:`~deconvviz.analyses.attribution.Target`) starts from, as
    :func:`~deconvviz.analyses.attribution.attribute_map` seeds it: for a class, its logit
    (relevance methods) or 1 (every other method: the gradient's seed, as Captum's); for a
    unit, its activation (``max``: the strongest; ``map``: the map's sum). Runs inside a
    guarded call; ``net``: a projector of ``model`` to reuse, ``logits``: ``model(x)``."""
    if target.is_class:
        if not is_relevance(method):
            return [1.0] * x.shape[0]
        if logits is None:
            with torch.no_grad():
                logits = model(x)
        return logits[torch.arange(x.shape[0]), target.classes].double().tolist()
    net = net if net is not None else Projector(model)
    act = net.record(x, target.layer).activations[target.layer]
    seeds = make_seeds(act, [target.feature], target.mode)[:, 0]
    return seeds.double().flatten(1).sum(1).tolist()


def seed_word(target, method: str) -> str:
    """What the seed of ``target``'s maps by ``method`` is, for a note: ``"logit"``,
    ``"seed"`` (1 at the logit) or ``"activation"``."""
    if not target.is_class:
        return "activation"
    return "logit" if is_relevance(method) else "seed"


def notes_for(model: nn.Module, x: Tensor, method: str, target, maps: Tensor, *,
              net: Optional[Projector] = None,
              logits: Optional[Tensor] = None) -> List[Optional[str]]:
    """:func:`check_map`'s note for each image's map ``maps`` ``[N, ...]`` of ``target`` by
    ``method`` (``None`` where the map is an answer): the one call an analysis makes.

    Examples:
        >>> notes = notes_for(model, x, "lrp", target, attribute_map(model, x, "lrp",
        ...                                                           resolved=target))
    """
    totals = seed_totals(model, x, method, target, net=net, logits=logits)
    return map_notes(maps, totals, is_relevance(method), what=seed_word(target, method))
