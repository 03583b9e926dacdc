"""Forward windows for the incremental passes (:mod:`deconvviz.engine.passes.incremental`): the
rows and columns a changed input can reach in each map, batches of windows, and the helpers
that cut windows out of stored maps and run one traced op again.

A sliding op (convolution, max or average pool) with kernel k, stride s, leading padding p
and dilation d changes outputs ``ceil((a + p - d(k-1)) / s)`` to ``floor((b - 1 + p) / s)``
when its input changed in rows ``a`` to ``b - 1`` (likewise columns), clipped to the map:
the receptive-field arithmetic of :mod:`deconvviz.engine.catalogue.geometry`, read forwards
(each op kind's part: :mod:`deconvviz.engine.catalogue.forward_windows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.fx as fx
from torch import Tensor

__all__ = ["Span", "Win", "windows_for", "pixel_rows", "pixel_grid", "everywhere",
           "node_args", "call_node", "cut_batches"]


@dataclass
class Span:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` per position (each ``[B]``, long): the exact
    part of a map that one position's patch can change."""

    y0: Tensor
    y1: Tensor
    x0: Tensor
    x1: Tensor

    def area(self) -> Tensor:
        return (self.y1 - self.y0).clamp_min(0) * (self.x1 - self.x0).clamp_min(0)

    def union(self, other: "Span") -> "Span":
        return Span(torch.minimum(self.y0, other.y0), torch.maximum(self.y1, other.y1),
                    torch.minimum(self.x0, other.x0), torch.maximum(self.x1, other.x1))


@dataclass
class Win:
    """A batch of windows of one map: ``data[b]`` is rows ``ys[b]..ys[b]+h`` and columns
    ``xs[b]..xs[b]+w`` of position b's map; everything else equals the base."""

    data: Tensor
    ys: List[int]
    xs: List[int]

    @property
    def size(self) -> Tuple[int, int]:
        return tuple(self.data.shape[-2:])


def windows_for(span: Span, bounds: Sequence[int]) -> Tuple[List[int], List[int], int, int]:
    """Starts and the shared size of windows holding every position's span, inside the map."""
    h = max(int((span.y1 - span.y0).max()), 1)
    w = max(int((span.x1 - span.x0).max()), 1)
    ys = torch.minimum(span.y0, torch.tensor(bounds[0] - h)).clamp_min(0).tolist()
    xs = torch.minimum(span.x0, torch.tensor(bounds[1] - w)).clamp_min(0).tolist()
    return ys, xs, h, w


def pixel_rows(t: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N * H * W, C]``: one row of channels per pixel (a view of a
    channels-last tensor)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def pixel_grid(ys: Tensor, xs: Tensor, h: int, w: int, width: int) -> Tensor:
    """``[B, h, w]`` flat pixel indices of the h x w windows at (ys[b], xs[b]) of a map
    ``width`` pixels wide."""
    return ((ys[:, None, None] + torch.arange(h)[:, None]) * width
            + xs[:, None, None] + torch.arange(w))


def everywhere(shape, b: int) -> Span:
    zero = torch.zeros(b, dtype=torch.long)
    return Span(zero, zero + shape[-2], zero, zero + shape[-1])


def node_args(node: fx.Node) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def call_node(node: fx.Node, gm: fx.GraphModule, args, kwargs):
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        obj = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj
    return node.target(*args, **kwargs)


def cut_batches(order: Sequence[int], convs, batch_size: int, slack: float) -> List[List[int]]:
    """``order`` (positions sorted so that similar windows are neighbours) cut into batches
    of at most ``batch_size``; a batch of at least a quarter of that ends early where the
    next position would make it compute more than ``slack`` times its positions' own
    windows' multiply-adds. ``convs``: per convolution, (multiply-adds per output position,
    each position's window height, each position's window width)."""
    least = max(1, batch_size // 4)
    out: List[List[int]] = []
    chunk: List[int] = []
    tall, wide, own = [0] * len(convs), [0] * len(convs), 0
    for i in order:
        mine = sum(m * h[i] * w[i] for m, h, w in convs)
        t = [max(a, h[i]) for a, (_, h, _) in zip(tall, convs)]
        v = [max(a, w[i]) for a, (_, _, w) in zip(wide, convs)]
        grown = sum(m * a * c for (m, _, _), a, c in zip(convs, t, v)) * (len(chunk) + 1)
        if chunk and (len(chunk) >= batch_size
                      or len(chunk) >= least and grown > slack * (own + mine)):
            out.append(chunk)
            chunk, own = [], 0
            t, v = [h[i] for _, h, _ in convs], [w[i] for _, _, w in convs]
        chunk.append(i)
        tall, wide, own = t, v, own + mine
    return out + [chunk] if chunk else out
