"""The receptive-field cone: projecting single activations on small windows.

One activation (``mode="max"``) only reaches the input pixels of its receptive field, and at
every layer below it only a window of the map can carry its signal. For a unit at (y, x) of
the projected layer, that window covers rows ``F*y + lo`` to ``F*y + hi`` of each map, where
F is the product of the strides in between and lo/hi follow from the kernels and paddings
(each rule's ``window``); where branches meet (residual additions, concatenations) the window
is the union of the branches' windows. All seeds of a layer share the windows' sizes, only
their offsets differ, so the reverse pass runs on stacked windows, through the same reverse
loop as the full-size pass (:mod:`deconvviz.engine.passes.reverse`), with this module's context:

- each op's rule runs in its window version (``cone_reverse``) where it has one: transposed
  convolutions run without padding on the window and zero what lands outside the map, exactly
  as the full-size transposed convolution drops it; unpooling gathers each window's switches
  and scatters them into the window below by index arithmetic;
- every other rule works on windows unchanged (it keeps the spatial layout);
- each contribution is padded into its target's window (the union of its users' windows).

The result is identical to the full-size pass (the tests compare both on every zoo model).
Layers whose path holds an op that mixes all positions (a fully-connected layer, a global
pool) have the whole image as their cone, and use the full-size pass.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..catalogue.geometry import SEED_WINDOW, Pair, Window
from ..catalogue.rules import RuleSet
from .graph import Op, TracedModel
from .layout import acts_per_position, channels_last_nodes
from .recording import Recording
from .reverse import FullSize, run

__all__ = ["ConePlan", "plan_cone", "cone_windows", "cone_is_cheaper", "bytes_per_seed"]


def _window_of(op: Op, out: Window, shapes, rules: RuleSet,
               last: FrozenSet[str] = frozenset()) -> Optional[Window]:
    """The window of ``op``'s inputs that its output window reaches, or ``None`` if the op
    mixes positions beyond a local window. ``last``: the nodes holding channels-last maps."""
    shape = shapes.get(op.name)
    rule = rules.rule_of(op)
    if shape is None or len(shape) < 3 or rule is None:
        return None
    local = acts_per_position(op, last) if last else None
    if local is not None:  # a permute to or from channels last, or an op acting per position
        return out if local else None
    return rule.window(op, out, shapes) if rule.window is not None else None


def cone_windows(ops_down: List[Op], layer_node: str, input_node: str,
                 rec: Recording, rules: RuleSet,
                 last: FrozenSet[str] = frozenset()) -> Optional[Dict[str, Window]]:
    """Each node's window below ``layer_node`` (ops in reverse topological order), or
    ``None`` when the layer's cone is the whole image."""
    shape = rec.shapes.get(layer_node)
    if shape is None or len(shape) != 4:
        return None
    windows = {layer_node: SEED_WINDOW}
    for op in ops_down:
        out = windows.get(op.name)
        if out is None:
            continue
        natural = _window_of(op, out, rec.shapes, rules, last)
        if natural is None:
            return None
        for node in rules.rule_of(op).inputs_reached(op):
            known = windows.get(node.name)
            merged = natural if known is None else known.union(natural)
            if merged is None:
                return None
            windows[node.name] = merged
    return windows if input_node in windows else None


def cone_is_cheaper(windows: Dict[str, Window], rec: Recording, margin: float = 1.0,
                    shapes: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether the windows hold fewer than ``margin`` times the values of the full maps (deep
    layers' cones can be larger than the maps themselves). ``shapes``: each node's shape,
    channels first (by default the recorded ones)."""
    shapes = rec.shapes if shapes is None else shapes
    cone = full = 0
    for name, window in windows.items():
        shape = shapes[name]
        cone += math.prod(shape[1:-2]) * window.size[0] * window.size[1]
        full += math.prod(shape[1:])
    return cone < margin * full


def bytes_per_seed(windows: Dict[str, Window], rec: Recording,
                   shapes: Optional[Mapping[str, Any]] = None) -> int:
    """Memory one seed needs: its largest windows (signal, contributions, scratch) and its
    full-size projection. ``shapes``: each node's shape, channels first."""
    shapes = rec.shapes if shapes is None else shapes
    sizes = sorted((math.prod(shapes[n][1:-2]) * w.size[0] * w.size[1]
                    for n, w in windows.items()), reverse=True)
    return 4 * (3 * sum(sizes[:2]) + math.prod(rec.input_shape[1:]))


class _Windows(FullSize):
    """The cone's context: S stacked windows, one per seed; each op's rule runs in its window
    version, and contributions are padded into their target's window."""

    def __init__(self, plan: "ConePlan", images: Tensor, ys: Tensor, xs: Tensor):
        super().__init__(plan.rules, plan.rec, plan.rec.input_shape[0], 1, plan.traced,
                         plan.folded)
        self.plan, self.windows = plan, plan.windows
        self.images, self.ys, self.xs = images, ys, xs
        self.seeds = images.shape[0]
        self.natural: Optional[Window] = None

    def enter(self, op: Op) -> None:
        self.natural = self.plan.natural[op.name]

    def shape(self, node) -> Tuple[int, ...]:
        s = self.rec.shapes[node.name]
        if node.name in self.plan.last:  # channels last: [S, h, w, C]
            return (self.seeds, *self.natural.size, s[-1])
        return (self.seeds, *s[1:-2], *self.natural.size)

    def reverse(self, op: Op, signal: Tensor):
        rule = self.rules.rule_of(op)
        last = self.plan.last
        if not last:
            return (rule.cone_reverse or rule.reverse)(op, signal, self)
        # Signals are kept channels first; each rule sees its op's own layout.
        if op.name in last:
            signal = signal.movedim(1, -1)
        out = (rule.cone_reverse or rule.reverse)(op, signal, self)
        return [(n, c.movedim(-1, 1) if n.name in last else c) for n, c in out]

    def place(self, op: Op, node, contribution: Tensor) -> Tensor:
        target, natural = self.windows[node.name], self.natural
        dy, dx = natural.lo[0] - target.lo[0], natural.lo[1] - target.lo[1]
        th, tw = target.size
        nh, nw = contribution.shape[-2:]
        if (dy, dx, nh, nw) != (0, 0, th, tw):
            contribution = F.pad(contribution, (dx, tw - nw - dx, dy, th - nh - dy))
        return contribution

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """Per-plan precomputation a window rule reuses across chunks of seeds."""
        return self.plan.cached(key, make)

    def input_of(self, op: Op) -> Tensor:
        """The op's recorded input over each seed's window (zero outside the map)."""
        return self._over_windows(self.rec.inputs[op.name], f"padded input {op.name}",
                                  op.inputs[0].name in self.plan.last)

    def argument(self, op: Op, node) -> Tensor:
        """The op's recorded argument ``node`` over each seed's window; one value per
        channel (a gate, ``[N, C, 1, 1]``) is each seed's image's."""
        value = self.rec.arguments[op.name][node.name]
        last = node.name in self.plan.last
        if not last and value.dim() >= 3 and value.shape[-2:] == (1, 1):
            return value[self.images]
        return self._over_windows(value, f"padded argument {op.name} {node.name}", last)

    def _over_windows(self, x: Tensor, key: str, channels_last: bool = False) -> Tensor:
        if channels_last:  # [N, H, W, C]: pick the windows channels first, hand them back
            return self._over_windows(x.movedim(-1, 1), key).movedim(1, -1)
        (h, w), natural = self.natural.size, self.natural
        y0, x0 = natural.starts(self.ys, self.xs)
        padded = self.plan.cached(key, lambda: F.pad(x, (w, w, h, h)))  # windows may hang over
        rows = (y0 + h)[:, None] + torch.arange(h, device=x.device)
        cols = (x0 + w)[:, None] + torch.arange(w, device=x.device)
        picked = padded[self.images[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return picked.permute(0, 3, 1, 2)  # [S, h, w, C] -> [S, C, h, w]


class ConePlan:
    """Everything about one layer's cone that does not depend on the seeds: the windows of
    every map, and what window rules precompute (a max-pool's switches as offsets into the
    window below)."""

    def __init__(self, traced: TracedModel, ops_down: List[Op], rec: Recording, layer_node: str,
                 windows: Dict[str, Window], folded: Dict[str, str], rules: RuleSet,
                 last: FrozenSet[str] = frozenset()):
        self.traced, self.ops, self.rec, self.layer_node = traced, ops_down, rec, layer_node
        self.windows, self.folded, self.rules = windows, folded, rules
        self.last = last  # nodes holding channels-last maps (see engine/passes/layout.py)
        self.shapes = _channels_first(rec.shapes, last)
        self.natural = {op.name: _window_of(op, windows[op.name], rec.shapes, rules, last)
                        for op in ops_down if op.name in windows}
        self._cache: Dict[str, Any] = {}

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def project(self, images: Tensor, features: Tensor, ys: Tensor, xs: Tensor,
                values: Tensor) -> Tensor:
        """Project S single activations (image, feature, y, x, value; each ``[S]``).

        Returns:
            ``[S, C, H, W]`` full-size projections, identical to the full-size pass.
        """
        count = images.shape[0]
        rec = self.rec
        seed = values.new_zeros(count, self.shapes[self.layer_node][1], 1, 1)
        seed[torch.arange(count, device=seed.device), features, 0, 0] = values
        # Channels last throughout: the transposed convolutions of wide windows run faster.
        start = {self.layer_node: seed.contiguous(memory_format=torch.channels_last)}
        signals = run(self.ops, start, _Windows(self, images, ys, xs))
        input_node = self.traced.input_node.name
        shape = rec.input_shape
        pixels = signals.get(input_node)
        if pixels is None:
            return values.new_zeros(count, *shape[1:])
        return _place(pixels, self.windows[input_node].starts(ys, xs), shape[-2:])


def plan_cone(traced: TracedModel, ops_down: List[Op], folded: Dict[str, str], rules: RuleSet,
              rec: Recording, layer_node: str, *,
              require_cheaper: bool = True) -> Optional[ConePlan]:
    """A :class:`ConePlan` for the reverse pass through ``ops_down`` from ``layer_node``, or
    ``None`` where its cone is the whole image (or, with ``require_cheaper``, not smaller than
    the full maps)."""
    last = frozenset(channels_last_nodes(reversed(ops_down)))
    windows = cone_windows(ops_down, layer_node, traced.input_node.name, rec, rules, last)
    if windows is None or (require_cheaper and not cone_is_cheaper(
            windows, rec, shapes=_channels_first(rec.shapes, last))):
        return None
    return ConePlan(traced, ops_down, rec, layer_node, windows, folded, rules, last)


def _channels_first(shapes: Mapping[str, Any], last: FrozenSet[str]) -> Mapping[str, Any]:
    """The shapes with channels-last maps' ``[N, H, W, C]`` read as ``[N, C, H, W]``."""
    if not last:
        return shapes
    return {n: (torch.Size((s[0], s[-1], *s[1:-1])) if n in last and len(s) == 4 else s)
            for n, s in shapes.items()}


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
