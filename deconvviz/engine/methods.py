"""Methods as rule sets: what differs between reverse-pass methods, and nothing else.

Every op kind's registered rule (:mod:`deconvviz.engine.ops`) is the op's exact transpose where
the op is linear, and unpooling through the switches for max-pools. A method names the rules
of the ops where methods differ (ReLU, local response normalisation). To add a method, add a
:class:`~deconvviz.engine.rules.RuleSet` here and register it in :data:`METHODS`.
"""
from __future__ import annotations

from typing import Dict, List

import torch.nn.functional as F

from ..errors import ArgumentError, closest
from .rules import RuleSet

__all__ = ["DECONVNET", "METHODS", "get_method", "list_methods"]


def _rectify(op, s, ctx):
    return [(op.inputs[0], F.relu(s))]


def _pass_through(op, s, ctx):
    return [(op.inputs[0], s)]


DECONVNET = RuleSet(
    name="deconvnet",
    title="deconvnet",
    overrides={
        "relu": (_rectify, "rectify the signal coming down: relu(signal)"),
        "lrn": (_pass_through, "identity (the paper's deconvnet passes contrast "
                               "normalisation)"),
    },
)
"""Zeiler & Fergus (2013): ReLUs rectify the signal coming down (the forward mask is not
used), max-pools unpool through the switches, every linear op applies its transpose, and
local response normalisation is passed through."""

METHODS: Dict[str, RuleSet] = {DECONVNET.name: DECONVNET}


def list_methods() -> List[str]:
    """The names of the reverse-pass methods."""
    return list(METHODS)


def get_method(name: str) -> RuleSet:
    """The rule set of a method, by name."""
    if name not in METHODS:
        raise ArgumentError(f"unknown method {name!r}.{closest(name, METHODS)} Valid methods: "
                            f"{', '.join(METHODS)}.")
    return METHODS[name]
