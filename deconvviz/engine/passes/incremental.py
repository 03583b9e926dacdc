"""Incremental exact forward passes: recompute only the window of each map an input patch can
change (Krypton's incremental view maintenance, Nakandala et al., SIGMOD 2019).

One forward pass of the unchanged image keeps every node's value (the *base*). A batch of B
positions then changes one square of the input each, and every op recomputes only the
window of its output that can differ from the base:

- a sliding op (convolution, max and average pool) maps the rows ``[a, b)`` that changed in
  its input to the outputs whose field meets them, ``ceil((a + pad - d(k-1)) / s)`` to
  ``floor((b - 1 + pad) / s)``, clipped to the map (the receptive-field arithmetic of
  :mod:`deconvviz.engine.catalogue.geometry`, read forwards). It runs without padding on the input
  rows those outputs read, sliced out of the base (padded with zeros, ``-inf`` for a
  max-pool) with the changed window laid over them;
- pointwise ops (ReLU and the other activations, BatchNorm, LRN across channels, dropout
  in eval, scaling by a constant) run on the window as it is; ops joining branches
  (additions, products, concatenation of channels) on the union of their inputs' windows;
- an op whose inputs changed everywhere (a global pool, a fully-connected layer, anything
  after a squeeze-excitation gate) runs in full, on the batch; so does an op with no
  forward-window rule, from which point on a warning says so once.

All B positions of a batch share each window's size (the largest of theirs, moved inside
the map), so each op runs once per batch on stacked windows: extra rows are recomputed from
the same inputs and equal the base. Once a window covers the whole map, the op computes in
full. The multiply-adds of convolutions and linear layers are counted three ways: a full
pass, the exact minimum (each position's own changed window) and what was computed.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor

from ..catalogue.forward_windows import (
    SLIDING,
    forward_kind,
    macs_per_position,
    run_sliding,
    sliding_rows,
)
from .graph import Op, TracedModel
from .windows import (
    Span,
    Win,
    call_node,
    cut_batches,
    everywhere,
    node_args,
    pixel_grid,
    pixel_rows,
    windows_for,
)

__all__ = ["IncrementalForward", "Span", "IncrementalWarning"]


class IncrementalWarning(UserWarning):
    """An op without a forward-window rule: the incremental pass runs in full from it."""


BATCH_SLACK = 1.05  # a batch may compute this much more than its positions' own windows


class IncrementalForward:
    """Forward passes of an image whose input changes in one window per position.

    Args:
        traced: the traced model.
        wanted: graph node names whose values :meth:`run` returns.
        layout: the memory format the windows are computed in (channels last, the default,
            copies whole pixels; ``torch.contiguous_format`` saves no copy per op where the
            model runs so).
    """

    def __init__(self, traced: TracedModel, wanted: Sequence[str], *,
                 layout: torch.memory_format = torch.channels_last):
        self.traced, self.wanted = traced, list(wanted)
        self.gm = traced.graph_module
        ops = traced.ops
        needed: Set[fx.Node] = set()
        stack = [ops[n].node for n in self.wanted]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                fx.node.map_arg((node.args, node.kwargs), lambda n: stack.append(n) or n)
        self.nodes = [n for n in self.gm.graph.nodes if n in needed and n.op != "output"]
        # Nodes whose value depends on the input (the ops on its path, and what reads their
        # shapes: x.size(0) is the batch's size, not the base's).
        self.live: Set[fx.Node] = set()
        for node in self.nodes:
            if node is traced.input_node or any(a in self.live for a in node_args(node)):
                self.live.add(node)
        self._kinds: Dict[Any, Optional[str]] = {}
        self._params: Dict[str, dict] = {}
        last_use: Dict[fx.Node, int] = {}
        for i, node in enumerate(self.nodes):
            for arg in node_args(node):
                last_use[arg] = i
        self.frees: Dict[int, List[fx.Node]] = {}
        for node, i in last_use.items():
            if node.name not in self.wanted:
                self.frees.setdefault(i, []).append(node)
        # Windows are cut out of a channels-last copy of each map, whole pixels at a time.
        self.layout = layout
        self.warned: Set[str] = set()
        self.macs = {"full": 0, "minimum": 0, "computed": 0}  # summed over positions
        self.positions = 0
        self.last_spans: Dict[str, Span] = {}  # of the last run, per node
        self.base: Dict[fx.Node, Any] = {}
        self._padded: Dict[Tuple[fx.Node, float], Tuple[Tensor, int, int]] = {}

    # -- the unchanged image -------------------------------------------------------------
    def set_base(self, x: Tensor) -> Dict[str, Tensor]:
        """One forward pass of the unchanged image ``x`` ``[1, C, H, W]``; keeps every node's
        value (cloned: a later in-place op must not change it). Returns the wanted values."""
        env: Dict[fx.Node, Any] = {}
        kept: Dict[fx.Node, Any] = {}
        with torch.no_grad():
            for node in self.nodes:
                if node.op == "placeholder":
                    env[node] = kept[node] = x.contiguous(memory_format=self.layout)
                    continue
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                env[node] = out = call_node(node, self.gm, args, kwargs)
                kept[node] = out.clone() if isinstance(out, Tensor) else out
        self.base, self._padded = kept, {}
        return {n: kept[self.traced.ops[n].node] for n in self.wanted}

    # -- a batch of changed inputs -------------------------------------------------------
    def run(self, patch: Tensor, ys: Sequence[int], xs: Sequence[int],
            channels: Optional[Dict[str, int]] = None) -> Dict[str, Tensor]:
        """The wanted values, ``[B, ...]``, for B inputs each equal to the base image except
        for the window at ``(ys[b], xs[b])`` of ``patch[b]`` (``[B, C, h, w]``).

        ``channels``: node name -> a channel; only that channel of the node is returned
        (``[B, h, w]``), made whole from its window without building the whole map."""
        channels = channels or {}
        b = patch.shape[0]
        h, w = patch.shape[-2:]
        yt, xt = torch.tensor(list(ys)), torch.tensor(list(xs))
        spans: Dict[fx.Node, Optional[Span]] = {
            self.traced.input_node: Span(yt, yt + h, xt, xt + w)}
        patch = patch.contiguous(memory_format=self.layout)
        env: Dict[fx.Node, Any] = {self.traced.input_node: Win(patch, list(ys), list(xs))}
        out: Dict[str, Tensor] = {}
        self.positions += b
        with torch.no_grad():
            for i, node in enumerate(self.nodes):
                if node.op != "placeholder":
                    if node in self.live:
                        env[node], spans[node] = self._step(node, env, spans, b)
                    else:
                        env[node] = self.base[node]
                if node.name in self.wanted:
                    c = channels.get(node.name)
                    out[node.name] = self._whole(node, env[node], b, c)
                for done in self.frees.get(i, ()):
                    env.pop(done, None)
        self.last_spans = {n.name: s for n, s in spans.items() if s is not None}
        return out

    def _kind(self, op: Op, node: fx.Node, shape) -> Optional[str]:
        """``"sliding"``, ``"pointwise"``, ``"global"`` (its output changes everywhere) or
        ``None`` (no forward-window rule)."""
        key = (op.name, tuple(shape) if shape is not None else None)
        if key not in self._kinds:
            self._kinds[key] = self._classify(op, node, shape)
        return self._kinds[key]

    def _classify(self, op: Op, node: fx.Node, shape) -> Optional[str]:
        first = self.base.get(op.inputs[0]) if op.inputs else None
        in_shape = first.shape if isinstance(first, Tensor) else None
        kind, params = forward_kind(op, node, shape, in_shape, self.base.get,
                                    self.live.__contains__)
        if params is not None:
            self._params[op.name] = params
        return kind

    def _step(self, node: fx.Node, env, spans, b: int):
        op = self.traced.ops[node.name]
        base = self.base[node]
        shape = base.shape if isinstance(base, Tensor) else None
        values = [env[n] for n in op.inputs]
        windowed = any(isinstance(v, Win) for v in values)
        in_spans = [spans.get(n) for n in op.inputs]
        kind = self._kind(op, node, shape)
        if kind is None and windowed and op.name not in self.warned:
            self.warned.add(op.name)
            warnings.warn(f"incremental occlusion: no forward-window rule for {op.label} at "
                          f"{op.where}; computing in full from there", IncrementalWarning,
                          stacklevel=4)
        span = self._span_of(op, kind, shape, in_spans, b)
        self._count(op, shape, span, b)
        if windowed and kind == "sliding":
            return self._sliding(node, op, values[0], span, shape, b), span
        if windowed and kind == "pointwise" and all(isinstance(v, Win) for v in values) \
                and all(tuple(self.base[n].shape[-2:]) == tuple(shape[-2:])
                        for n in op.inputs):
            return self._pointwise_run(node, op, env, span, shape, b), span
        return self._full(node, env, b, op, shape), span

    # -- windows -------------------------------------------------------------------------
    def _span_of(self, op: Op, kind, shape, in_spans, b: int) -> Optional[Span]:
        if shape is None or len(shape) != 4:
            return None
        if kind in ("sliding", "pointwise") and in_spans and all(
                s is not None for s in in_spans):
            return self._span(op, kind, in_spans, shape)
        return everywhere(shape, b)

    def spans(self, ys: Sequence[int], xs: Sequence[int],
              size: Tuple[int, int]) -> Dict[str, Span]:
        """Each map's exact changed span per position (graph node name -> :class:`Span`),
        for squares of ``size`` at (ys, xs), without running the model (after
        :meth:`set_base`)."""
        b = len(ys)
        yt, xt = torch.tensor(list(ys)), torch.tensor(list(xs))
        spans: Dict[fx.Node, Optional[Span]] = {
            self.traced.input_node: Span(yt, yt + size[0], xt, xt + size[1])}
        for node in self.nodes:
            if node not in self.live or node.op == "placeholder":
                continue
            op, shape = self.traced.ops[node.name], self._shape(node)
            kind = self._kind(op, node, shape)
            spans[node] = self._span_of(op, kind, shape, [spans.get(n) for n in op.inputs], b)
        return {n.name: s for n, s in spans.items() if s is not None}

    def _shape(self, node: fx.Node):
        base = self.base[node]
        return base.shape if isinstance(base, Tensor) else None

    def batches(self, ys: Sequence[int], xs: Sequence[int], size: Tuple[int, int],
                batch_size: int) -> List[List[int]]:
        """Batches of positions (indices into ``ys``, ``xs``) whose windows have the same
        sizes where possible: the positions sorted by their windows' sizes at every
        convolution and pool, deepest first (a batch computes the largest of its windows).
        A batch of at least a quarter of ``batch_size`` ends early where the next position
        would make it compute more than ``BATCH_SLACK`` times its positions' own windows'
        multiply-adds (VGG16, 16-px squares at stride 8, batch 64: 12.1% of a full pass's
        multiply-adds instead of 13.3%, in 36 batches instead of 12)."""
        spans = self.spans(ys, xs, size)
        keys = [torch.stack([s.y1 - s.y0, s.x1 - s.x0], 1) for n, s in spans.items()
                if self.traced.ops[n].kind in SLIDING]
        order = list(range(len(ys)))
        if not keys:
            return [order[k:k + batch_size] for k in range(0, len(ys), batch_size)]
        signature = torch.cat(keys[::-1], 1).tolist()
        order.sort(key=lambda i: (signature[i], ys[i], xs[i]))
        convs = [(macs_per_position(self.traced.ops[n], self._shape(self.traced.ops[n].node)),
                  (s.y1 - s.y0).tolist(), (s.x1 - s.x0).tolist())
                 for n, s in spans.items() if self.traced.ops[n].kind == "conv"]
        return cut_batches(order, convs, batch_size, BATCH_SLACK)

    def cost(self, ys: Sequence[int], xs: Sequence[int], size: Tuple[int, int],
             batch_size: int) -> Dict[str, int]:
        """Multiply-adds of the convolutions and linear layers over all positions, without
        running the model: a full pass per position (``full``), each position's own changed
        windows (``minimum``: the limit of an exact method, with the pools' alignment and the
        clipping at the borders) and what :meth:`run` computes in the batches of
        :meth:`batches` (``computed``)."""
        out = {"full": 0, "minimum": 0, "computed": 0}
        for chunk in self.batches(ys, xs, size, batch_size):
            b = len(chunk)
            spans = self.spans([ys[k] for k in chunk], [xs[k] for k in chunk], size)
            full: Set[fx.Node] = set()
            for node in self.nodes:
                if node not in self.live or node.op == "placeholder":
                    continue
                op, shape = self.traced.ops[node.name], self._shape(node)
                span = spans.get(node.name)
                whole = (not op.inputs or any(n in full for n in op.inputs) or span is None
                         or self._kind(op, node, shape) not in ("sliding", "pointwise"))
                if not whole:
                    h, w = windows_for(span, shape[-2:])[2:]
                    whole = (h, w) == tuple(shape[-2:])
                if whole:
                    full.add(node)
                if op.kind in ("conv", "linear") and shape is not None:
                    per = macs_per_position(op, shape)
                    area = math.prod(shape[-2:]) if op.kind == "conv" else 1
                    out["full"] += per * area * b
                    out["minimum"] += (per * int(span.area().sum()) if op.kind == "conv"
                                       and span is not None else per * area * b)
                    out["computed"] += per * (area if whole else h * w) * b
        return out

    def _span(self, op: Op, kind: str, in_spans: List[Span], shape) -> Span:
        bounds = shape[-2:]
        if kind == "sliding":
            s = in_spans[0]
            (y0, y1), (x0, x1) = (sliding_rows(self._params[op.name], i, a, b, bounds[i])
                                  for i, (a, b) in enumerate(((s.y0, s.y1), (s.x0, s.x1))))
            return Span(y0, y1, x0, x1)
        if any(tuple(self.base[n].shape[-2:]) != tuple(bounds) for n in op.inputs):
            return everywhere(shape, in_spans[0].y0.shape[0])  # a broadcast gate changed
        out = in_spans[0]
        for s in in_spans[1:]:
            out = out.union(s)
        return out

    def _count(self, op: Op, shape, span: Optional[Span], b: int) -> None:
        if op.kind not in ("conv", "linear") or shape is None:
            return
        per = macs_per_position(op, shape)
        full = per * (math.prod(shape[-2:]) if op.kind == "conv" else 1)
        self.macs["full"] += full * b
        self.macs["minimum"] += (per * int(span.area().sum()) if op.kind == "conv"
                                 and span is not None else full * b)

    def _pointwise_run(self, node, op, env, span: Span, shape, b: int):
        ys, xs, h, w = windows_for(span, shape[-2:])
        if (h, w) == tuple(shape[-2:]):
            return self._full(node, env, b, op, shape)

        def arg(n):
            v = env[n]
            if n in self.live:
                return self._region(n, v, ys, xs, h, w, 0.0)
            return v
        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        return Win(call_node(node, self.gm, args, kwargs), ys, xs)

    def _sliding(self, node, op: Op, value, span: Span, shape, b: int):
        ys, xs, h, w = windows_for(span, shape[-2:])
        if (h, w) == tuple(shape[-2:]):
            return self._full(node, {op.inputs[0]: value}, b, op, shape)
        params = self._params[op.name]
        if op.kind == "conv":
            self.macs["computed"] += macs_per_position(op, shape) * h * w * b
        k, st, d, pad = params["kernel"], params["stride"], params["dilation"], params["pad"]
        ry = [y * st[0] - pad[0] for y in ys]
        rx = [x * st[1] - pad[1] for x in xs]
        rh, rw = (h - 1) * st[0] + d[0] * (k[0] - 1) + 1, (w - 1) * st[1] + d[1] * (k[1] - 1) + 1
        region = self._region(op.inputs[0], value, ry, rx, rh, rw, params["fill"])
        return Win(run_sliding(op, params, region), ys, xs)

    def _padded_rows(self, node: fx.Node, fill: float, my: int, mx: int):
        """``(rows, my, mx)``: ``node``'s base padded by at least ``my`` rows and ``mx``
        columns of ``fill`` on each side, as pixel rows (a view of a channels-last copy),
        kept per node and fill value and grown when a region needs more margin."""
        key = (node, fill)
        cached = self._padded.get(key)
        if cached is None or cached[1] < my or cached[2] < mx:
            my, mx = max(my, cached[1] if cached else 0), max(mx, cached[2] if cached else 0)
            padded = F.pad(self.base[node], (mx, mx, my, my), value=fill)
            cached = (pixel_rows(padded.contiguous(memory_format=self.layout)), my, mx)
            self._padded[key] = cached
        return cached

    def _region_source(self, node: fx.Node, ry, rx, rh: int, rw: int, fill: float):
        """:meth:`_padded_rows` with the margin that regions ``rh`` x ``rw`` at ``(ry[b],
        rx[b])`` need beyond ``node``'s map."""
        hh, ww = self.base[node].shape[-2:]
        my = max(0, -min(ry), max(ry) + rh - hh)
        mx = max(0, -min(rx), max(rx) + rw - ww)
        return self._padded_rows(node, fill, my, mx)

    def _region(self, node: fx.Node, value: "Win", ry, rx, rh: int, rw: int,
                fill: float) -> Tensor:
        """``[B, C, rh, rw]`` (channels last): rows ``ry[b]..`` and columns ``rx[b]..`` of
        each position's map (``fill`` outside it), from the base with the changed window laid
        over it. Two indexed copies of whole rows of channels, whatever the batch."""
        if value.ys == list(ry) and value.xs == list(rx) and value.size == (rh, rw):
            return value.data
        b, c = value.data.shape[:2]
        source, my, mx = self._region_source(node, ry, rx, rh, rw, fill)
        ryt, rxt = torch.tensor(ry), torch.tensor(rx)
        index = pixel_grid(ryt + my, rxt + mx, rh, rw, self.base[node].shape[-1] + 2 * mx)
        device = source.device  # the indices are made on the CPU
        out = source.index_select(0, index.flatten().to(device))  # [B * rh * rw, C]
        # The window's pixels, by their place in the region.
        (h, w), wy, wx = value.size, torch.tensor(value.ys) - ryt, torch.tensor(value.xs) - rxt
        rows = wy[:, None] + torch.arange(h)  # [B, h]
        cols = wx[:, None] + torch.arange(w)
        inside = (((rows >= 0) & (rows < rh))[:, :, None]
                  & ((cols >= 0) & (cols < rw))[:, None, :]).flatten()
        where = (torch.arange(b)[:, None, None] * (rh * rw) + rows[:, :, None] * rw
                 + cols[:, None, :]).flatten()
        pixels = pixel_rows(value.data)
        if bool(inside.all()):
            out.index_copy_(0, where.to(device), pixels)
        else:
            out.index_copy_(0, where[inside].to(device), pixels[inside.to(device)])
        return out.view(b, rh, rw, c).permute(0, 3, 1, 2).contiguous(memory_format=self.layout)

    def _whole(self, node: fx.Node, value, b: int, channel: Optional[int] = None):
        """The node's value over the whole map for every position (one channel, if given)."""
        if not isinstance(value, Win):
            if isinstance(value, Tensor) and value.shape[0] != b:
                value = value.expand(b, *value.shape[1:])
            # Cloned: a later in-place op (ReLU(inplace=True)) must not change it.
            return value.clone() if channel is None else value[:, channel].clone()
        base = self.base[node]
        hh, ww = base.shape[-2:]
        h, w = value.size
        where = pixel_grid(torch.tensor(value.ys), torch.tensor(value.xs), h, w, ww)
        where = (where + torch.arange(b)[:, None, None] * (hh * ww)).flatten()
        if channel is not None:
            out = base[0, channel].flatten().repeat(b)
            out.index_copy_(0, where.to(out.device), value.data[:, channel].flatten())
            return out.view(b, hh, ww)
        out = pixel_rows(base).repeat(b, 1)
        out.index_copy_(0, where.to(out.device), pixel_rows(value.data))
        return out.view(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous(memory_format=self.layout)

    def _full(self, node: fx.Node, env, b: int, op: Op, shape):
        """Run the op in full on the batch (windowed inputs made whole)."""
        def arg(n):
            if n not in env:
                return self.base[n]
            v = env[n]
            if n in self.live:
                return self._whole(n, v, b)
            return v
        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        if op.kind == "conv" and shape is not None:
            self.macs["computed"] += macs_per_position(op, shape) * math.prod(shape[-2:]) * b
        elif op.kind == "linear" and shape is not None:
            self.macs["computed"] += macs_per_position(op, shape) * b
        return call_node(node, self.gm, args, kwargs)
