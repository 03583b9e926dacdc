"""A streaming histogram of each image's strongest activation, per feature, with fixed bins.

The bins are the same for every model, layer, batch, process and run, so two histograms
merge by adding their integer counts: ``torchrun`` ranks add theirs, a resumed scan keeps
counting into its checkpoint, and the result is exactly that of one straight run over the
same values.

A value's bin is read from its float32 bits, not computed with ``log2`` (whose last bit may
differ between CPU and GPU kernels): the exponent and the top three bits of the mantissa, so
eight bins per octave with edges ``2**e * (1 + j/8)``, each exactly representable.

Columns of a ``[C, BINS]`` histogram:

- ``0``: the image's strongest activation is not positive (``<= 0``, or NaN): the feature
  did not fire on it;
- ``1``: ``0 < v < 2**LOW`` (underflow);
- ``2 ... BINS-2``: ``2**e * (1 + j/8) <= v < 2**e * (1 + (j+1)/8)``, ``LOW <= e < HIGH``;
- ``BINS-1``: ``v >= 2**HIGH`` (overflow, infinity included).
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor

__all__ = ["BINS", "LOW", "HIGH", "PER_OCTAVE", "bin_of", "empty", "accumulate", "edges",
           "pack", "unpack"]

PER_OCTAVE = 8
LOW, HIGH = -32, 32  # regular bins cover [2**LOW, 2**HIGH)
_MANTISSA_SHIFT = 23 - 3  # keep the top 3 mantissa bits: 8 bins per octave
_BIAS = 127
_FIRST = (LOW + _BIAS) << 3  # (float bits >> 20) of 2**LOW
_LAST = (HIGH + _BIAS) << 3  # ... of 2**HIGH
BINS = 2 + (HIGH - LOW) * PER_OCTAVE + 1


def bin_of(values: Tensor) -> Tensor:
    """The bin (column) of each value, as a long tensor of the same shape."""
    v = values.detach().float().contiguous()
    key = (v.view(torch.int32) >> _MANTISSA_SHIFT).long()  # sign bit set: negative key
    regular = (key - _FIRST + 2).clamp(1, BINS - 1)  # below 2**LOW: 1; at or above 2**HIGH: last
    positive = v > 0  # False for NaN
    return torch.where(positive, regular, torch.zeros_like(regular))


def empty(channels: int, device=None) -> Tensor:
    """An all-zero ``[channels, BINS]`` count tensor (int64)."""
    return torch.zeros((channels, BINS), dtype=torch.long, device=device)


def accumulate(hist: Tensor, strongest: Tensor) -> Tensor:
    """``hist`` (``[C, BINS]``) plus one count per image and feature of ``strongest``
    (``[B, C]``: each image's strongest activation per feature). Returns a new tensor."""
    bins = bin_of(strongest).T  # [C, B]
    return hist.scatter_add(1, bins, torch.ones_like(bins))


def edges() -> List[float]:
    """The ``BINS + 1`` edges: ``-inf, 0, 2**LOW, ..., 2**HIGH, inf``; bin ``i`` holds
    ``edges[i] <= v < edges[i+1]`` (bin 0: ``v <= 0``)."""
    regular = [2.0 ** e * (1 + j / PER_OCTAVE) for e in range(LOW, HIGH)
               for j in range(PER_OCTAVE)]
    return [float("-inf"), 0.0] + regular + [2.0 ** HIGH, float("inf")]


def pack(hist: Tensor) -> Dict[str, Tensor]:
    """A ``[C, BINS]`` histogram stored sparsely: its non-zero counts with their feature and
    bin (a feature's counts sit in a few bins; a scan of two images has at most two each)."""
    features, bins = hist.nonzero(as_tuple=True)
    return {"features": features.to(torch.int32).cpu(), "bins": bins.to(torch.int16).cpu(),
            "counts": hist[features, bins].cpu(), "channels": torch.tensor(hist.shape[0])}


def unpack(packed: Dict[str, Tensor], device=None) -> Tensor:
    """The full ``[C, BINS]`` histogram of :func:`pack`'s output."""
    hist = empty(int(packed["channels"]), device)
    hist[packed["features"].long(), packed["bins"].long()] = packed["counts"].to(hist.device)
    return hist
