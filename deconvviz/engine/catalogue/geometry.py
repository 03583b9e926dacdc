"""Receptive-field arithmetic, shared by the layer geometry and the receptive-field cone.

Two views of the same arithmetic:

- :class:`Geometry` follows a map's receptive field *up* from the input: for a convolution or
  pooling with kernel k, stride s, padding p and dilation d, the field grows by
  ``(k - 1) * d * jump``, its origin moves by ``-p * jump`` and the jump (the distance in input
  pixels between neighbouring units) is multiplied by s. Where branches meet the field is the
  union of the branches' fields.
- :class:`Window` follows one unit's cone *down* to the input: the rows and columns of each map
  that one unit of the projected layer can reach.

Each op kind's rule (:mod:`deconvviz.engine.catalogue.ops`) says which of the helpers below applies to
it; padding, including ``"same"`` and ``"valid"``, is resolved in one place,
:func:`leading_padding`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

__all__ = ["Geometry", "Window", "Pair", "leading_padding", "symmetric_padding",
           "sliding_field", "union_field", "same_layout_field", "sliding_window"]

Pair = Tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """Receptive field of the units of one map, per spatial axis (rows, columns).

    ``size`` is the field's extent in input pixels, ``stride`` the distance in input pixels
    between neighbouring units, and ``start`` the input coordinate of the first pixel of unit
    (0, 0)'s field (negative where the field reaches into the padding).
    """

    size: Pair
    stride: Pair
    start: Pair

    def window(self, y: int, x: int) -> Tuple[int, int, int, int]:
        """``(top, left, height, width)`` of unit (y, x)'s field in input pixels (may extend
        past the image borders)."""
        return (self.start[0] + y * self.stride[0], self.start[1] + x * self.stride[1],
                self.size[0], self.size[1])


INPUT_GEOMETRY = Geometry((1, 1), (1, 1), (0, 0))


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

    def starts(self, ys, xs):
        """Absolute first row and column of the window for seeds at (ys, xs)."""
        return ys * self.factor[0] + self.lo[0], xs * self.factor[1] + self.lo[1]


SEED_WINDOW = Window((1, 1), (0, 0), (0, 0))


def _padding(params) -> Tuple[Pair, bool]:
    """(padding before the first row/column, whether the padding is the same on both sides)."""
    p = params["padding"]
    if p == "valid":
        return (0, 0), True
    if p == "same":  # PyTorch puts the odd pixel of "same" padding after the map
        totals = [d * (k - 1) for k, d in zip(params["kernel"], params["dilation"])]
        return tuple(t // 2 for t in totals), not any(t % 2 for t in totals)
    return tuple(p), True


def leading_padding(params) -> Pair:
    """Rows and columns of padding before the map, for any padding (ints, "same", "valid")."""
    return _padding(params)[0]


def symmetric_padding(params) -> Optional[Pair]:
    """The padding where it is the same on both sides of the map, else ``None``."""
    pad, symmetric = _padding(params)
    return pad if symmetric else None


def sliding_field(g: Geometry, params) -> Geometry:
    """The field of a sliding-window op's output from its input's field ``g``."""
    k, s, d = params["kernel"], params["stride"], params.get("dilation", (1, 1))
    pad = leading_padding(params)
    return Geometry(size=tuple(g.size[i] + (k[i] - 1) * d[i] * g.stride[i] for i in range(2)),
                    stride=tuple(g.stride[i] * s[i] for i in range(2)),
                    start=tuple(g.start[i] - pad[i] * g.stride[i] for i in range(2)))


def union_field(fields: Sequence[Geometry]) -> Geometry:
    """The field of an op that keeps the spatial layout: the union of its inputs' fields."""
    start = tuple(min(g.start[i] for g in fields) for i in range(2))
    end = tuple(max(g.start[i] + g.size[i] for g in fields) for i in range(2))
    return Geometry(tuple(end[i] - start[i] for i in range(2)),
                    tuple(max(g.stride[i] for g in fields) for i in range(2)), start)


def same_layout_field(fields: Sequence[Geometry], in_shapes, out_shape) -> Optional[Geometry]:
    """An op that keeps the spatial layout: the union of its inputs' fields (``None`` where an
    input has another spatial size)."""
    same = [g for g, s in zip(fields, in_shapes)
            if s is not None and len(s) == 4 and s[-2:] == out_shape[-2:]]
    return union_field(same) if len(same) == len(fields) else None


def sliding_window(out: Window, params, pad: Pair) -> Window:
    """The input window a sliding-window op's output window ``out`` reaches."""
    k, s, d = params["kernel"], params["stride"], params.get("dilation", (1, 1))
    return Window(tuple(out.factor[i] * s[i] for i in range(2)),
                  tuple(out.lo[i] * s[i] - pad[i] for i in range(2)),
                  tuple(out.hi[i] * s[i] - pad[i] + d[i] * (k[i] - 1) for i in range(2)))
