"""Layer names: resolving an alias or a module path, listing layers, receptive-field geometry.

A layer is the output of a module. Zoo models have short aliases in the vocabulary of their
papers (``conv3``, ``conv5_3``, ``inception4a``, ``layer3.1``); every dotted module path of
any model (``features.15``) works too. A module called several times in one forward pass is
addressed as ``path@0``, ``path@1``, ...

The receptive field of a unit is computed from the traced graph, never typed in: for every
convolution or pooling with kernel k, stride s, padding p and dilation d, the field grows by
``(k - 1) * d * jump``, its origin moves by ``-p * jump`` and the jump (the stride between
neighbouring units, in input pixels) is multiplied by s. Where branches meet (residual
additions, concatenations) the field is the union of the branches' fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .errors import UnknownLayerError, closest
from .graph import Op, TracedModel, trace
from .recording import record_nodes
from .zoo import get_spec, load_model, model_info

__all__ = ["Layer", "Geometry", "list_layers", "aliases_of", "overview_layers", "resolve_layer",
           "geometry"]


@dataclass(frozen=True)
class Geometry:
    """Receptive field of the units of one map, per spatial axis (rows, columns).

    ``size`` is the field's extent in input pixels, ``stride`` the distance in input pixels
    between neighbouring units, and ``start`` the input coordinate of the first pixel of unit
    (0, 0)'s field (negative where the field reaches into the padding).
    """

    size: Tuple[int, int]
    stride: Tuple[int, int]
    start: Tuple[int, int]

    def window(self, y: int, x: int) -> Tuple[int, int, int, int]:
        """``(top, left, height, width)`` of unit (y, x)'s field in input pixels (may extend
        past the image borders)."""
        return (self.start[0] + y * self.stride[0], self.start[1] + x * self.stride[1],
                self.size[0], self.size[1])


@dataclass(frozen=True)
class Layer:
    """One named layer of a model.

    Attributes:
        alias: its short name (``conv3``), or ``None`` where the model has none.
        path: the dotted module path whose output it is (``features.relu3``).
        shape: ``(C, H, W)`` of its output (``(C,)`` for fully-connected layers).
        rf_size: receptive field in input pixels (the whole input for global layers).
        rf_stride: input pixels between neighbouring units (``None`` for global layers).
        geometry: the full :class:`Geometry` (``None`` for global layers).
        node: the name of its node in the traced graph.
    """

    alias: Optional[str]
    path: str
    shape: Tuple[int, ...]
    rf_size: int
    rf_stride: Optional[int]
    geometry: Optional[Geometry]
    node: str

    @property
    def name(self) -> str:
        """The alias where there is one, else the module path."""
        return self.alias or self.path


def aliases_of(model: nn.Module) -> Dict[str, str]:
    """The layer aliases of a model from :func:`load_model` (``{}`` for other modules)."""
    info = model_info(model)
    return dict(get_spec(info.name).aliases) if info is not None else {}


def overview_layers(aliases: Mapping[str, str]) -> List[str]:
    """The aliases worth a row in a per-layer overview, shallow to deep: convolutions, stages,
    blocks and fully-connected layers; not pools or normalisations (whose strongest features
    repeat the layer below) nor every residual block (``layer3.1``)."""
    return [a for a in aliases if not a.startswith(("pool", "norm")) and "." not in a]


def resolve_layer(traced: TracedModel, layer: str,
                  aliases: Mapping[str, str]) -> Tuple[Optional[str], str, str]:
    """Find ``layer`` (an alias or a module path) in the traced model.

    Returns:
        ``(alias, path, node_name)``.

    Raises:
        UnknownLayerError: naming the closest matches and how to list the layers.
    """
    if not isinstance(layer, str):
        raise UnknownLayerError(f"a layer is named by a string, got {layer!r}")
    alias = layer if layer in aliases else _alias_for(aliases, layer)
    path = aliases.get(layer, layer)
    base, _, call = path.partition("@")
    nodes = traced.module_outputs.get(base)
    if nodes is None:
        choices = list(aliases) + [p for p in traced.module_outputs if p]
        in_model = _is_module(traced.model, base)
        why = ("is not called in the forward pass" if in_model
               else "is neither a layer alias nor a module path of this model")
        raise UnknownLayerError(
            f"layer {layer!r} {why}.{closest(layer, choices)} "
            f"List the layers with `deconvviz layers` or deconvviz.list_layers(model).")
    if call:
        if not call.isdigit() or int(call) >= len(nodes):
            raise UnknownLayerError(f"layer {layer!r}: {base!r} is called {len(nodes)} times; "
                                    f"use {base}@0 to {base}@{len(nodes) - 1}")
        return alias, path, nodes[int(call)].name
    if len(nodes) > 1:
        raise UnknownLayerError(
            f"module {base!r} is called {len(nodes)} times in the forward pass, so its output "
            f"is ambiguous; ask for {base}@0 to {base}@{len(nodes) - 1}")
    return alias, path, nodes[0].name


def _alias_for(aliases: Mapping[str, str], path: str) -> Optional[str]:
    return next((a for a, p in aliases.items() if p == path), None)


def _is_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def geometry(traced: TracedModel, shapes: Mapping[str, torch.Size]) -> Dict[str, Optional[Geometry]]:
    """Receptive-field geometry of every node computed from the input (``None`` = global)."""
    geoms: Dict[str, Optional[Geometry]] = {}
    for op in traced.ops.values():
        if op.kind == "input":
            geoms[op.name] = Geometry((1, 1), (1, 1), (0, 0))
        elif op.inputs and op.name in shapes:
            geoms[op.name] = _propagate(op, [geoms.get(n.name) for n in op.inputs],
                                        [shapes.get(n.name) for n in op.inputs], shapes[op.name])
    return geoms


def _propagate(op: Op, ins: List[Optional[Geometry]], in_shapes, out_shape) -> Optional[Geometry]:
    if any(g is None for g in ins) or len(out_shape) != 4:
        return None
    if op.kind in ("conv", "maxpool", "avgpool"):
        g, p = ins[0], op.params
        pad = p["padding"]
        if isinstance(pad, str):  # "valid" or "same"
            pad = (0, 0) if pad == "valid" else tuple(d * (k - 1) // 2 for k, d in
                                                      zip(p["kernel"], p["dilation"]))
        return Geometry(
            size=tuple(g.size[i] + (p["kernel"][i] - 1) * p["dilation"][i] * g.stride[i]
                       for i in range(2)),
            stride=tuple(g.stride[i] * p["stride"][i] for i in range(2)),
            start=tuple(g.start[i] - pad[i] * g.stride[i] for i in range(2)))
    if op.kind == "adaptive_avgpool":
        h, w = in_shapes[0][-2:]
        oh, ow = out_shape[-2:]
        if (h, w) == (oh, ow):
            return ins[0]
        if h % oh or w % ow:
            return None
        k = (h // oh, w // ow)
        g = ins[0]
        return Geometry(tuple(g.size[i] + (k[i] - 1) * g.stride[i] for i in range(2)),
                        tuple(g.stride[i] * k[i] for i in range(2)), g.start)
    # Every other op keeps the spatial layout: the field is the union of its inputs' fields.
    same = [g for g, s in zip(ins, in_shapes)
            if s is not None and len(s) == 4 and s[-2:] == out_shape[-2:]]
    if len(same) != len(ins):
        return None
    start = tuple(min(g.start[i] for g in same) for i in range(2))
    end = tuple(max(g.start[i] + g.size[i] for g in same) for i in range(2))
    return Geometry(tuple(end[i] - start[i] for i in range(2)),
                    tuple(max(g.stride[i] for g in same) for i in range(2)), start)


ModelLike = Union[str, nn.Module]


def list_layers(model_or_name: ModelLike, input_size: int = 224, *,
                all_modules: bool = False) -> List[Layer]:
    """One :class:`Layer` per named layer, in network order.

    Args:
        model_or_name: a zoo name (built with random weights; geometry doesn't depend on
            them) or any ``nn.Module``.
        input_size: side of the square input the shapes are computed for.
        all_modules: list every module path, not only the aliases (always so for models
            that have no aliases).

    Examples:
        >>> [l.rf_size for l in list_layers("zfnet") if l.alias == "conv3"]
        [75]
    """
    model = load_model(model_or_name, weights=None) if isinstance(model_or_name, str) \
        else model_or_name
    traced = trace(model)
    aliases = aliases_of(model)
    names = list(aliases)
    if all_modules or not aliases:
        known = set(aliases.values())
        for path, nodes in traced.module_outputs.items():
            if path and path not in known:
                names += [path] if len(nodes) == 1 else [f"{path}@{i}" for i in range(len(nodes))]
    resolved = {name: resolve_layer(traced, name, aliases) for name in names}
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, input_size, input_size,
                    device=param.device if param is not None else None)
    recording = record_nodes(traced, x, {})
    geoms = geometry(traced, recording.shapes)
    order = {name: i for i, name in enumerate(traced.ops)}
    layers = []
    for name, (alias, path, node) in resolved.items():
        if node not in recording.shapes:
            continue  # not a tensor (a module returning a tuple)
        g = geoms.get(node)
        layers.append(Layer(
            alias=alias, path=path, shape=tuple(recording.shapes[node][1:]),
            rf_size=g.size[0] if g else input_size, rf_stride=g.stride[0] if g else None,
            geometry=g, node=node))
    layers.sort(key=lambda l: (order[l.node], l.alias is None))
    return layers
