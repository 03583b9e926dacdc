"""Tokens on the patch grid: where a vision transformer's ``[N, T, C]`` sequences are a map.

A ViT cuts the image into patches with a convolution whose stride is its kernel, flattens its
``[N, C, H, W]`` output into ``H*W`` tokens (``x.flatten(2).transpose(1, 2)``, or torchvision's
``reshape`` and ``permute``) and concatenates learnt tokens before them (the class token, DeiT's
distillation token, registers). Every later layer that keeps one row per token (LayerNorm, the
MLP, the residual sums, the attention's output) has ``1 + H*W (+ ...)`` rows: its ``C`` features
are read on the ``H x W`` patch grid, and the learnt tokens are named positions of their own
(``cls``, ``dist``, ``reg0``...).

The grid is found from the graph (the flattened convolution, the concatenation), never from
the model's class; this module only reads the traced ops and their shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.fx as fx
from torch import Tensor

from .graph import Op
from .layout import permute_dims

__all__ = ["TokenGrid", "token_grids_of", "tokens_to_map", "establishes_grid"]


@dataclass(frozen=True)
class TokenGrid:
    """How a layer's tokens ``[N, T, C]`` lie on the patch grid.

    Attributes:
        grid: ``(H, W)``, the patch grid (the patch embedding's map), read row by row.
        prefix: the names of the tokens before the grid, in order (``("cls",)``; DeiT:
            ``("cls", "dist")``; registers ``reg0``, ``reg1``...).
        source: the graph node of the map the tokens were cut from (the patch embedding).
    """

    grid: Tuple[int, int]
    prefix: Tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def count(self) -> int:
        """How many tokens the layer has: the named ones and one per patch."""
        return len(self.prefix) + self.grid[0] * self.grid[1]

    @property
    def label(self) -> str:
        """The named tokens as the layer table writes them: ``+cls``, ``+cls +dist``."""
        regs = [p for p in self.prefix if p.startswith("reg") and p[3:].isdigit()]
        named = [f"+{p}" for p in self.prefix if p not in regs]
        return " ".join(named + ([f"+{len(regs)} reg"] if regs else []))

    def index(self, name: str) -> int:
        """The row of a named token (``"cls"``) in the layer's ``[N, T, C]`` output."""
        return self.prefix.index(name)

    def features(self, tokens: Tensor) -> Tensor:
        """``[N, T, C]`` -> the patch tokens on the grid, ``[N, C, H, W]``."""
        return tokens_to_map(tokens, len(self.prefix), *self.grid)

    def named(self, tokens: Tensor) -> Tensor:
        """``[N, T, C]`` -> the named tokens, ``[N, P, C]``."""
        return tokens[:, :len(self.prefix)]

    def layer(self, grid_map: Tensor, named: Optional[Tensor] = None) -> Tensor:
        """``[M, C, H, W]`` (and the named tokens ``[M, P, C]``, zero by default) -> the
        layer's own layout ``[M, T, C]``: a signal on the grid handed back to the tokens."""
        m, c = grid_map.shape[:2]
        patches = grid_map.reshape(m, c, -1).transpose(1, 2)
        if named is None:
            named = patches.new_zeros(m, len(self.prefix), c)
        return torch.cat([named, patches], dim=1)


def tokens_to_map(tokens: Tensor, prefix: int, height: int, width: int) -> Tensor:
    """The patch tokens of ``[N, T, C]`` (after ``prefix`` named ones) as ``[N, C, H, W]``
    (a function, so that a traced forward can call it)."""
    n, _, c = tokens.shape
    return tokens[:, prefix:].transpose(1, 2).reshape(n, c, height, width)



def _swaps_last_two(op: Op) -> bool:
    """A ``permute(0, 2, 1)`` or ``transpose(1, 2)`` of a rank-3 tensor."""
    dims = permute_dims(op)
    if dims is not None:
        return dims == (0, 2, 1)
    node = op.node
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name not in ("transpose", "swapaxes", "swapdims") or len(node.args) < 3:
        return False
    try:
        return {int(d) % 3 for d in node.args[1:3]} == {1, 2}
    except (TypeError, ValueError):
        return False


def establishes_grid(op: Op, shapes: Mapping[str, torch.Size], axes, flat) -> Optional[object]:
    """The grid an op makes of a map: ``("flat", ((H, W), map))`` for ``[N, C, H, W]``
    flattened to ``[N, C, H*W]``; a :class:`TokenGrid` for tokens ``[N, H*W, C]`` (that flat map's
    transpose, or a channels-last map ``[N, H, W, C]`` flattened); else ``None``."""
    if len(op.inputs) != 1:
        return None
    src, out = op.inputs[0].name, shapes.get(op.name)
    shape = shapes.get(src)
    if out is None or shape is None or len(out) != 3:
        return None
    if src in flat and _swaps_last_two(op):
        return TokenGrid(flat[src][0], source=flat[src][1])
    if len(shape) == 4 and op.kind == "reshape":
        if axes.get(src) == 1 and tuple(out) == (shape[0], shape[1], shape[2] * shape[3]):
            return ("flat", ((int(shape[2]), int(shape[3])), src))
        if axes.get(src) == 3 and tuple(out) == (shape[0], shape[1] * shape[2], shape[3]):
            return TokenGrid((int(shape[1]), int(shape[2])), source=src)
    return None


def _token_name(node: fx.Node) -> str:
    """The name of a learnt token from the parameter it is read from (``cls_token``,
    ``class_token`` -> ``cls``; ``dist_token`` -> ``dist``; ``reg_token`` -> ``reg``)."""
    seen = node
    while seen.op != "get_attr":
        parents = [a for a in seen.args if isinstance(a, fx.Node)]
        if not parents:
            return "token"
        seen = parents[0]
    attr = str(seen.target).rsplit(".", 1)[-1].lower()
    for key, name in (("cls", "cls"), ("class", "cls"), ("dist", "dist"), ("reg", "reg")):
        if key in attr:
            return name
    return attr


def _concatenated(op: Op, grid: TokenGrid, shapes) -> Optional[TokenGrid]:
    """The grid after ``torch.cat`` of learnt tokens before the grid's tokens (along the
    tokens), else ``None``."""
    node = op.node
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or dim not in (1, -2) or len(op.inputs) != 1:
        return None
    names = []
    for part in parts:
        if part is op.inputs[0]:
            return replace(grid, prefix=grid.prefix + tuple(names)) if part is parts[-1] \
                else None
        size = shapes.get(part.name) if isinstance(part, fx.Node) else None
        if size is None or len(size) != 3:
            return None
        base = _token_name(part)
        names += [base] if size[1] == 1 and base != "reg" else \
            [f"{base}{i}" for i in range(int(size[1]))]
    return None


def token_grids_of(ops: Iterable[Op], shapes: Mapping[str, torch.Size],
                   axes: Mapping[str, Optional[int]]) -> Dict[str, TokenGrid]:
    """Node name -> the :class:`TokenGrid` of its ``[N, T, C]`` output, for every node whose
    tokens deconvviz can read on the patch grid.

    Found forwards from the graph: a convolution's map flattened into tokens starts a grid;
    a concatenation of learnt tokens before it names them; every later rank-3 node of the
    batch's size with as many rows as there are tokens (LayerNorm, the MLP, residual sums,
    the attention's output) holds the same tokens in the same order.
    """
    grids: Dict[str, TokenGrid] = {}
    flat: Dict[str, tuple] = {}
    below: Dict[str, TokenGrid] = {}  # what descends from a grid's tokens
    batch = None
    for op in ops:
        out = shapes.get(op.name)
        if op.kind == "input":
            batch = out[0] if out is not None and batch is None else batch
            continue
        made = establishes_grid(op, shapes, axes, flat)
        if isinstance(made, tuple):
            flat[op.name] = made[1]
            continue
        if made is not None:
            grids[op.name] = below[op.name] = made
            continue
        known = [grids[n.name] for n in op.inputs if n.name in grids]
        if op.kind == "cat" and len(known) == 1:
            joined = _concatenated(op, known[0], shapes)
            if joined is not None:
                grids[op.name] = below[op.name] = joined
                continue
        above = {below[n.name] for n in op.inputs if n.name in below}
        if len(above) != 1:
            continue
        grid = next(iter(above))
        below[op.name] = grid
        if out is not None and len(out) == 3 and out[0] == batch and out[1] == grid.count:
            grids[op.name] = grid
    return grids
