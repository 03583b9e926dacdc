"""The receptive-field cone: projecting single activations on small windows.

One activation (``mode="max"``) only reaches the input pixels of its receptive field, and at
every layer below it only a window of the map can carry its signal. For a unit at (y, x) of
the projected layer, that window covers rows ``F*y + lo`` to ``F*y + hi`` of each map, where
F is the product of the strides in between and lo/hi follow from the kernels and paddings;
where branches meet (residual additions, concatenations) the window is the union of the
branches' windows. All seeds of a layer share the windows' sizes, only their offsets differ,
so the reverse pass runs on stacked windows:

- transposed convolutions run without padding on the window; the window's rows and columns
  that fall outside the map (the padding) are zeroed, exactly as the full-size transposed
  convolution drops them;
- unpooling gathers each window's switches and scatters them into the window below by index
  arithmetic;
- every other op with a rule works on windows unchanged (it keeps the spatial layout).

The result is identical to the full-size pass (the tests compare both on every zoo model).
Layers whose path holds an op that mixes all positions (a fully-connected layer, a global
pool) have the whole image as their cone, and use the full-size pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import Op, TracedModel
from .recording import Recording
from .rules import REVERSE, Context, conv_weight

if TYPE_CHECKING:
    from .deconvnet import ReversePass

__all__ = ["Window", "ConePlan", "plan_cone", "cone_windows", "cone_is_cheaper",
           "bytes_per_seed"]

Pair = Tuple[int, int]


@dataclass(frozen=True)
class Window:
    """Rows ``factor[0] * y + lo[0]`` .. ``factor[0] * y + hi[0]`` (and likewise columns) of a
    map, for the seed at (y, x) of the projected layer."""

    factor: Pair
    lo: Pair
    hi: Pair

    @property
    def size(self) -> Pair:
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    def union(self, other: "Window") -> Optional["Window"]:
        if self.factor != other.factor:
            return None
        return Window(self.factor, tuple(map(min, self.lo, other.lo)),
                      tuple(map(max, self.hi, other.hi)))

    def starts(self, ys: Tensor, xs: Tensor) -> Tuple[Tensor, Tensor]:
        """Absolute first row and column of the window for seeds at (ys, xs)."""
        return ys * self.factor[0] + self.lo[0], xs * self.factor[1] + self.lo[1]


_SAME_WINDOW = {"relu", "batchnorm", "identity", "add", "cat", "scale", "reshape", "transpose"}


def _padding(op: Op) -> Optional[Pair]:
    p = op.params["padding"]
    if p == "valid":
        return (0, 0)
    if p == "same":
        totals = [d * (k - 1) for k, d in zip(op.params["kernel"], op.params["dilation"])]
        return None if any(t % 2 for t in totals) else tuple(t // 2 for t in totals)
    return p


def _natural(op: Op, out: Window, rec: Recording) -> Optional[Window]:
    """The window of ``op``'s inputs that its output window reaches, or ``None`` if the op
    mixes positions beyond a local window."""
    shape = rec.shapes.get(op.name)
    if shape is None or len(shape) < 3:
        return None
    if op.kind in ("conv", "maxpool", "avgpool"):
        pad = _padding(op)
        if pad is None or (op.kind == "avgpool" and (pad != (0, 0) or op.params["ceil_mode"])):
            return None
        k, s, d = op.params["kernel"], op.params["stride"], op.params["dilation"]
        return Window(tuple(out.factor[i] * s[i] for i in range(2)),
                      tuple(out.lo[i] * s[i] - pad[i] for i in range(2)),
                      tuple(out.hi[i] * s[i] - pad[i] + d[i] * (k[i] - 1) for i in range(2)))
    if op.kind in _SAME_WINDOW:
        if op.kind == "cat" and op.params["dim"] not in (1, 1 - len(shape)):
            return None
        for node in op.inputs:
            inner = rec.shapes.get(node.name)
            if inner is None or len(inner) < 3 or inner[-2:] != shape[-2:]:
                return None
        return out
    return None


def cone_windows(ops_down: List[Op], layer_node: str, input_node: str,
                 rec: Recording) -> Optional[Dict[str, Window]]:
    """Each node's window below ``layer_node`` (ops in reverse topological order), or
    ``None`` when the layer's cone is the whole image."""
    shape = rec.shapes.get(layer_node)
    if shape is None or len(shape) != 4:
        return None
    windows = {layer_node: Window((1, 1), (0, 0), (0, 0))}
    for op in ops_down:
        out = windows.get(op.name)
        if out is None:
            continue
        natural = _natural(op, out, rec)
        if natural is None:
            return None
        for node in op.inputs:
            known = windows.get(node.name)
            merged = natural if known is None else known.union(natural)
            if merged is None:
                return None
            windows[node.name] = merged
    return windows if input_node in windows else None


def cone_is_cheaper(windows: Dict[str, Window], rec: Recording, margin: float = 1.0) -> bool:
    """Whether the windows hold fewer than ``margin`` times the values of the full maps (deep
    layers' cones can be larger than the maps themselves)."""
    cone = full = 0
    for name, window in windows.items():
        shape = rec.shapes[name]
        cone += math.prod(shape[1:-2]) * window.size[0] * window.size[1]
        full += math.prod(shape[1:])
    return cone < margin * full


def bytes_per_seed(windows: Dict[str, Window], rec: Recording) -> int:
    """Memory one seed needs: its largest windows (signal, contributions, scratch) and its
    full-size projection."""
    sizes = sorted((math.prod(rec.shapes[n][1:-2]) * w.size[0] * w.size[1]
                    for n, w in windows.items()), reverse=True)
    return 4 * (3 * sum(sizes[:2]) + math.prod(rec.input_shape[1:]))


class _WindowContext(Context):
    """A rule context whose shapes are the current op's natural input window."""

    def __init__(self, rec: Recording, seeds: int, natural: Window, traced: TracedModel,
                 folded: Dict[str, str]):
        super().__init__(rec, rec.input_shape[0], 1, traced, folded)
        self.seeds, self.natural = seeds, natural

    def shape(self, node) -> Tuple[int, ...]:
        s = self.rec.shapes[node.name]
        return (self.seeds, *s[1:-2], *self.natural.size)


def _inside(starts: Tuple[Tensor, Tensor], size: Pair, bounds: Pair) -> Optional[Tensor]:
    """``[S, 1, h, w]`` float mask of the window positions inside the map, or ``None`` when
    every window lies inside."""
    (y0, x0), (h, w) = starts, size
    if bool((y0 >= 0).all() and (y0 + h <= bounds[0]).all() and (x0 >= 0).all()
            and (x0 + w <= bounds[1]).all()):
        return None
    rows = y0[:, None] + torch.arange(h, device=y0.device)
    cols = x0[:, None] + torch.arange(w, device=x0.device)
    keep = ((rows >= 0) & (rows < bounds[0]))[:, :, None] \
        & ((cols >= 0) & (cols < bounds[1]))[:, None, :]
    return keep[:, None].float()


class ConePlan:
    """Everything about one layer's cone that does not depend on the seeds: the windows,
    and for each max-pool its switches as offsets into the window below (so that unpooling a
    window is one gather and one scatter)."""

    def __init__(self, traced: TracedModel, ops_down: List[Op], rec: Recording, layer_node: str,
                 windows: Dict[str, Window], folded: Dict[str, str]):
        self.traced, self.ops, self.rec, self.layer_node = traced, ops_down, rec, layer_node
        self.windows = windows
        self.folded = folded
        self.natural = {op.name: _natural(op, windows[op.name], rec)
                        for op in ops_down if op.name in windows}
        self.local = {op.name: self._local_switches(op) for op in ops_down
                      if op.kind == "maxpool" and op.name in windows}

    def _local_switches(self, op: Op):
        """Switches as flat offsets into the natural window below a window starting at each
        output position, channels last, padded with -1 so that windows may hang over the
        map's edges."""
        switches = self.rec.switches_of(op.name).permute(0, 2, 3, 1)  # [N, ho, wo, C]
        ho, wo = switches.shape[1:3]
        width = self.rec.shapes[op.inputs[0].name][-1]
        s, pad = op.params["stride"], _padding(op)
        device = switches.device
        rows = switches // width - (torch.arange(ho, device=device) * s[0] - pad[0])[:, None, None]
        cols = switches % width - (torch.arange(wo, device=device) * s[1] - pad[1])[:, None]
        nh, nw = self.windows[op.name].size
        uh, uw = self.natural[op.name].size
        local = F.pad(rows * uw + cols, (0, 0, nw, nw, nh, nh), value=-1)
        pattern = (torch.arange(nh, device=device)[:, None] * s[0] * uw
                   + torch.arange(nw, device=device) * s[1])
        # [N, ho + nh + 1, wo + nw + 1, C, nh, nw]: every window, as a view
        return local.unfold(1, nh, 1).unfold(2, nw, 1), pattern, (nh, nw)

    def _unpool(self, op: Op, s: Tensor, images: Tensor, starts) -> Tensor:
        windows, pattern, (nh, nw) = self.local[op.name]
        seeds, channels = s.shape[:2]
        picked = windows[images, starts[0] + nh, starts[1] + nw]  # [S, C, nh, nw]
        # Outside the map the signal is zero, so any offset in the window will do there.
        index = (picked.clamp_min(0) + pattern).permute(0, 2, 3, 1).reshape(seeds, nh * nw,
                                                                             channels)
        uh, uw = self.natural[op.name].size
        out = s.new_zeros(seeds, uh * uw, channels)
        out.scatter_add_(1, index, s.permute(0, 2, 3, 1).reshape(seeds, nh * nw, channels))
        return out.reshape(seeds, uh, uw, channels).permute(0, 3, 1, 2)  # channels last

    def _conv(self, op: Op, s: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
        p = op.params
        weight = conv_weight(op, self.folded, self.traced)
        out = F.conv_transpose2d(s, weight, None, p["stride"], 0, 0, p["groups"], p["dilation"])
        # What lands on the padding is dropped, as the full-size transposed convolution does.
        natural = self.natural[op.name]
        keep = _inside(natural.starts(ys, xs), natural.size,
                       self.rec.shapes[op.inputs[0].name][-2:])
        return out if keep is None else out.mul_(keep)

    def project(self, images: Tensor, features: Tensor, ys: Tensor, xs: Tensor,
                values: Tensor) -> Tensor:
        """Project S single activations (image, feature, y, x, value; each ``[S]``).

        Returns:
            ``[S, C, H, W]`` full-size projections, identical to the full-size pass.
        """
        count = images.shape[0]
        rec = self.rec
        seed = values.new_zeros(count, rec.shapes[self.layer_node][1], 1, 1)
        seed[torch.arange(count, device=seed.device), features, 0, 0] = values
        # Channels last throughout: the transposed convolutions of wide windows run faster.
        signals: Dict[str, Tensor] = {self.layer_node: seed.contiguous(
            memory_format=torch.channels_last)}
        for op in self.ops:
            signal = signals.pop(op.name, None)
            if signal is None:
                continue
            natural = self.natural[op.name]
            if op.kind == "conv":
                pairs = [(op.inputs[0], self._conv(op, signal, ys, xs))]
            elif op.kind == "maxpool":
                starts = self.windows[op.name].starts(ys, xs)
                pairs = [(op.inputs[0], self._unpool(op, signal, images, starts))]
            else:
                pairs = REVERSE[op.kind](op, signal, _WindowContext(rec, count, natural,
                                                                    self.traced, self.folded))
            for node, contribution in pairs:
                target = self.windows[node.name]
                dy, dx = natural.lo[0] - target.lo[0], natural.lo[1] - target.lo[1]
                th, tw = target.size
                nh, nw = contribution.shape[-2:]
                if (dy, dx, nh, nw) != (0, 0, th, tw):
                    contribution = F.pad(contribution, (dx, tw - nw - dx, dy, th - nh - dy))
                if node.name in signals:
                    signals[node.name] = signals[node.name] + contribution
                else:
                    signals[node.name] = contribution
        input_node = self.traced.input_node.name
        shape = rec.input_shape
        pixels = signals.get(input_node)
        if pixels is None:
            return values.new_zeros(count, *shape[1:])
        return _place(pixels, self.windows[input_node].starts(ys, xs), shape[-2:])


def plan_cone(traced: TracedModel, steps: "ReversePass", rec: Recording, layer_node: str,
              *, require_cheaper: bool = True) -> Optional[ConePlan]:
    """A :class:`ConePlan` for the reverse pass ``steps`` from ``layer_node``, or ``None``
    where its cone is the whole image (or, with ``require_cheaper``, not smaller than the
    full maps)."""
    windows = cone_windows(steps.ops, layer_node, traced.input_node.name, rec)
    if windows is None or (require_cheaper and not cone_is_cheaper(windows, rec)):
        return None
    return ConePlan(traced, steps.ops, rec, layer_node, windows, steps.folded)


def _place(windows: Tensor, starts: Tuple[Tensor, Tensor], size: Pair) -> Tensor:
    """Put each seed's window into a full-size zero image (parts outside the image dropped)."""
    count, channels, h, w = windows.shape
    rows = starts[0][:, None] + torch.arange(h, device=windows.device)
    cols = starts[1][:, None] + torch.arange(w, device=windows.device)
    inside = ((rows >= 0) & (rows < size[0]))[:, :, None] \
        & ((cols >= 0) & (cols < size[1]))[:, None, :]
    spill = size[0] * size[1]  # one extra slot takes everything outside the image
    flat = torch.where(inside, rows[:, :, None] * size[1] + cols[:, None, :], spill)
    out = windows.new_zeros(count, channels, spill + 1)
    out.scatter_(2, flat.reshape(count, 1, -1).expand(count, channels, h * w),
                 windows.reshape(count, channels, -1))
    return out[:, :, :spill].reshape(count, channels, *size)
