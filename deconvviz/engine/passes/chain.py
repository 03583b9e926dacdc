"""Incremental forward passes along a chain of images, each differing from the one before in
one window: region perturbation's steps (one more region removed), IROF's (one more
superpixel).

:class:`IncrementalChain` is :class:`.incremental.IncrementalForward` with one base per
position (``B`` images, each its own unchanged image) that moves on with each step: a step
recomputes, as occlusion's passes do, only the window of each map that the changed input
window can reach, and then writes those windows into the bases (in place, and into the
padded copies the windows are cut from), so that the next step starts from this one. The
values are the plain forward pass's, to the rounding of the smaller convolutions
(``tests/test_metrics_incremental.py``).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.fx as fx
from torch import Tensor

from .incremental import IncrementalForward
from .windows import Span, Win, pixel_grid, pixel_rows

__all__ = ["IncrementalChain"]


class IncrementalChain(IncrementalForward):
    """Forward passes of ``B`` images that change one window each per :meth:`step`."""

    def set_base(self, x: Tensor) -> Dict[str, Tensor]:
        """One forward pass of the ``B`` starting images ``x`` ``[B, C, H, W]``: each
        position's base. Returns the wanted values ``[B, ...]``."""
        return super().set_base(x)

    def step(self, patch: Tensor, ys: Sequence[int], xs: Sequence[int]) -> Dict[str, Tensor]:
        """Image ``b`` becomes its base with ``patch[b]`` (``[B, C, h, w]``) at
        ``(ys[b], xs[b])`` (inside the image); returns the wanted values ``[B, ...]`` and
        makes the new images the bases."""
        b = patch.shape[0]
        h, w = patch.shape[-2:]
        yt, xt = torch.tensor(list(ys)), torch.tensor(list(xs))
        spans = {self.traced.input_node: Span(yt, yt + h, xt, xt + w)}
        patch = patch.contiguous(memory_format=self.layout)
        value = Win(patch, list(ys), list(xs))
        self._commit(self.traced.input_node, value, b)
        env = {self.traced.input_node: value}
        out: Dict[str, Tensor] = {}
        self.positions += b
        with torch.no_grad():
            for i, node in enumerate(self.nodes):
                if node.op != "placeholder":
                    if node in self.live:
                        env[node], spans[node] = self._step(node, env, spans, b)
                        self._commit(node, env[node], b)
                    else:
                        env[node] = self.base[node]
                if node.name in self.wanted:
                    out[node.name] = self._whole(node, env[node], b)
                for done in self.frees.get(i, ()):
                    env.pop(done, None)
        return out

    # -- moving the bases on -------------------------------------------------------------
    def _commit(self, node: fx.Node, value, b: int) -> None:
        """Write ``value`` (a window per position, or the whole map) into ``node``'s bases and
        their padded copies."""
        if not isinstance(value, Win):
            self.base[node] = value.clone() if isinstance(value, Tensor) else value
            for key in [k for k in self._padded if k[0] is node]:
                del self._padded[key]
            return
        base = self.base[node]
        if not base.is_contiguous(memory_format=self.layout):  # pixel rows must be a view
            base = self.base[node] = base.contiguous(memory_format=self.layout)
        hh, ww = base.shape[-2:]
        h, w = value.size
        ys, xs = torch.tensor(value.ys), torch.tensor(value.xs)
        pixels = pixel_rows(value.data)
        where = pixel_grid(ys, xs, h, w, ww) + torch.arange(b)[:, None, None] * (hh * ww)
        rows = pixel_rows(base)
        rows.index_copy_(0, where.flatten().to(rows.device), pixels)
        for (kept, _), (source, my, mx) in self._padded.items():
            if kept is node:
                wide = ww + 2 * mx
                at = (pixel_grid(ys + my, xs + mx, h, w, wide)
                      + torch.arange(b)[:, None, None] * ((hh + 2 * my) * wide))
                source.index_copy_(0, at.flatten().to(source.device), pixels)

    # -- one base per position -----------------------------------------------------------
    def _region(self, node: fx.Node, value: "Win", ry, rx, rh: int, rw: int,
                fill: float) -> Tensor:
        """As :meth:`IncrementalForward._region`, each position cut from its own base (the
        bases already hold this step's windows)."""
        if value.ys == list(ry) and value.xs == list(rx) and value.size == (rh, rw):
            return value.data
        b, c = value.data.shape[:2]
        hh, ww = self.base[node].shape[-2:]
        source, my, mx = self._region_source(node, ry, rx, rh, rw, fill)
        wide, tall = ww + 2 * mx, hh + 2 * my
        index = (pixel_grid(torch.tensor(ry) + my, torch.tensor(rx) + mx, rh, rw, wide)
                 + torch.arange(b)[:, None, None] * (tall * wide))
        out = source.index_select(0, index.flatten().to(source.device))
        return out.view(b, rh, rw, c).permute(0, 3, 1, 2).contiguous(memory_format=self.layout)

    def _whole(self, node: fx.Node, value, b: int, channel=None):
        """The node's value over the whole map for every position: its base (which holds
        this step's windows)."""
        if isinstance(value, Win):
            value = self.base[node]
        return super()._whole(node, value, b, channel)
