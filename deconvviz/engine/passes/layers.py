"""Layer names: resolving an alias or a module path, listing layers, receptive-field geometry.

A layer is the output of a module. Zoo models have short aliases in the vocabulary of their
papers (``conv3``, ``conv5_3``, ``inception4a``, ``layer3.1``); every dotted module path of
any model (``features.15``) works too. A module called several times in one forward pass is
addressed as ``path@0``, ``path@1``, ...

Shapes and receptive fields are measured from the traced graph, never typed in: each op's
rule gives its receptive-field arithmetic (:mod:`deconvviz.engine.catalogue.geometry`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..._signatures import api
from ...data.devices import model_device, model_dtype
from ...data.zoo import get_spec, load_model, model_info
from ...errors import UnknownLayerError, closest
from ..catalogue.geometry import INPUT_GEOMETRY, Geometry, same_layout_field
from ..catalogue.rules import get_rule
from ..guard import device_for, runs_model
from .graph import Op, TracedModel, trace
from .layout import _normalises_last_dim, acts_per_position, channels_last_nodes, no_channels
from .recording import channel_axes, own_side, record_nodes, token_grids
from .tokens import TokenGrid, establishes_grid

__all__ = ["Layer", "Geometry", "Measured", "list_layers", "own_input_size", "measure", "layer_of", "layers_of",
           "aliases_of", "mixing_op", "whole_image",
           "overview_layers", "resolve_layer", "geometry"]


@dataclass(frozen=True)
class Layer:
    """One named layer of a model.

    Attributes:
        alias: its short name (``conv3``), or ``None`` where the model has none.
        path: the dotted module path whose output it is (``features.relu3``).
        shape: ``(C, H, W)`` of its output (``(C,)`` for fully-connected layers), channels
            first whatever the memory layout (a channels-last ``[N, H, W, C]`` map, as in
            ConvNeXt's blocks and Swin's stages, is listed as ``(C, H, W)``); the raw shape
            where the layer has no channels (tokens on no patch grid).
        rf_size: receptive field in input pixels (the whole input for global layers).
        rf_stride: input pixels between neighbouring units (``None`` for global layers).
        geometry: the full :class:`Geometry` (``None`` for global layers).
        node: the name of its node in the traced graph.
        channels_last: its output is ``[N, H, W, C]`` (its features are the last axis).
        no_features: why it has no features deconvviz can show (tokens ``[N, T, D]`` on
            no patch grid deconvviz could find), else ``None``.
        tokens: for a ViT's token layer ``[N, 1 + H*W, C]``: how its tokens lie on the
            patch grid (:class:`~deconvviz.engine.passes.tokens.TokenGrid`: the grid and the
            named tokens, ``cls``...); its ``shape`` is then ``(C, H, W)``, the patch grid.
        whole_image: where each unit sees the whole image (``geometry`` is ``None``), the
            sentence that says why (a ViT's tokens after attention; a CNN's global pool),
            naming the op from which on it does; else ``None``.
        patches: for a token layer, the geometry of its tokens' patches (the patch
            embedding's), each token's place in the photo even where it sees the whole
            image; else ``None``.
    """

    alias: Optional[str]
    path: str
    shape: Tuple[int, ...]
    rf_size: int
    rf_stride: Optional[int]
    geometry: Optional[Geometry]
    node: str
    channels_last: bool = False
    no_features: Optional[str] = None
    tokens: Optional[TokenGrid] = None
    whole_image: Optional[str] = None
    patches: Optional[Geometry] = None

    @property
    def hit_geometry(self) -> Optional[Geometry]:
        """Where a unit's hit is drawn in the photo: its receptive field, or for a token
        past attention its own patch (``None``: the whole image)."""
        return self.geometry if self.geometry is not None else self.patches

    @property
    def shape_label(self) -> str:
        """The shape as the layer table writes it: ``768x14x14 +cls`` for a ViT's tokens."""
        text = "x".join(str(s) for s in self.shape)
        return text + (f" {self.tokens.label}" if self.tokens and self.tokens.prefix else "")

    @property
    def features(self) -> Optional[int]:
        """How many features (channels) the layer has; ``None`` where it has none deconvviz
        can find (:attr:`no_features` says why)."""
        return None if self.no_features is not None else self.shape[0]

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
    if nodes is None and base in traced.tuple_outputs:
        count = traced.tuple_outputs[base]
        raise UnknownLayerError(
            f"module {base!r} returns {count} values (a tuple or list), not one tensor; pick "
            f"one: {', '.join(f'{base}[{i}]' for i in range(count))}")
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
    """Receptive-field geometry of every node computed from the input (``None`` = global).

    Channels-last maps (ConvNeXt's ``permute``, LayerNorm and MLP) keep their positions, so
    their field is their input's, as the receptive-field cone follows them."""
    geoms: Dict[str, Optional[Geometry]] = {}
    last = channels_last_nodes(traced.ops.values())
    first = {n: (torch.Size((s[0], s[-1], *s[1:-1])) if n in last and len(s) == 4 else s)
             for n, s in shapes.items()}
    tokens = _TokenFields(traced, shapes)
    for op in traced.ops.values():
        if op.kind == "input":
            geoms[op.name] = INPUT_GEOMETRY
        elif op.inputs and op.name in shapes:
            ins = [geoms.get(n.name) for n in op.inputs]
            local = acts_per_position(op, last) if last else None
            if len(shapes[op.name]) == 3:
                geoms[op.name] = tokens.field(op, ins)
            elif local is None:
                geoms[op.name] = _field(op, ins, [first.get(n.name) for n in op.inputs],
                                        first[op.name])
            else:
                geoms[op.name] = ins[0] if local and len(ins) == 1 else None
    return geoms


# Op kinds that act on each token alone: a token keeps the field of its patch through them.
_PER_TOKEN = {"relu", "relu6", "activation", "pointwise", "identity", "linear", "add", "scale",
              "cat"}


class _TokenFields:
    """The receptive fields of a ViT's tokens ``[N, T, C]``: a patch token's is its patch
    (the patch embedding's field) through the ops that act on each token alone; after the
    first op that mixes tokens (attention), every token sees the whole image (``None``)."""

    def __init__(self, traced: TracedModel, shapes: Mapping[str, torch.Size]) -> None:
        self.traced, self.shapes = traced, shapes
        self.axes: Optional[Mapping[str, Optional[int]]] = None  # found on first use
        self.flat: Dict[str, tuple] = {}

    def field(self, op: Op, ins: List[Optional[Geometry]]) -> Optional[Geometry]:
        if not ins or any(g is None for g in ins) or len(set(ins)) != 1:
            return None
        if self.axes is None:  # a CNN with no local rank-3 map never gets here
            self.axes = channel_axes(self.traced, self.shapes)
            self.grids = token_grids(self.traced, self.shapes)
        made = establishes_grid(op, self.shapes, self.axes, self.flat)
        if isinstance(made, tuple):
            self.flat[op.name] = made[1]
        if made is not None:
            return ins[0]
        per_token = op.kind in _PER_TOKEN or _normalises_last_dim(op)
        return ins[0] if op.name in self.grids and per_token else None


def _field(op: Op, ins: List[Optional[Geometry]], in_shapes, out_shape) -> Optional[Geometry]:
    if any(g is None for g in ins) or len(out_shape) != 4:
        return None
    rule = get_rule(op.kind)
    if rule is None:  # no rule (yet): measured as an op that keeps the layout, like most
        return same_layout_field(ins, in_shapes, out_shape)
    return rule.field(op, ins, in_shapes, out_shape) if rule.field is not None else None


def mixing_op(traced: TracedModel, geoms: Mapping[str, Optional[Geometry]],
              node: str) -> Optional[Op]:
    """The op from which on the units of ``node`` see the whole image: the first, in forward
    order, of ``node`` and what it reads, whose inputs each have a local field and whose
    output has none (a ViT's attention, a CNN's global pool); ``None`` where the field of
    ``node`` is local."""
    if geoms.get(node) is not None:
        return None
    seen, stack, found = set(), [traced.ops[node]], []
    while stack:
        op = stack.pop()
        if op.name in seen or op.kind == "input":
            continue
        seen.add(op.name)
        if geoms.get(op.name) is None and op.inputs and all(
                geoms.get(n.name) is not None for n in op.inputs):
            found.append(op)
        stack.extend(traced.ops[n.name] for n in op.inputs)
    order = {name: i for i, name in enumerate(traced.ops)}
    return min(found, key=lambda o: order[o.name]) if found else None


def whole_image(layer: str, op: Optional[Op], tokens: Optional[TokenGrid]) -> str:
    """Why each unit of ``layer`` sees the whole image, in one sentence."""
    if op is None:
        return f"each unit of layer {layer!r} sees the whole image"
    where = op.where.split(" (")[0]
    if tokens is not None:
        return (f"each token of layer {layer!r} sees the whole image: the tokens are mixed "
                f"by the attention in {where}, after which every token attends to every "
                f"patch")
    return (f"each unit of layer {layer!r} sees the whole image (from {op.label} at {where} "
            f"on, no unit has a field smaller than the image)")


ModelLike = Union[str, nn.Module]


def own_input_size(model: nn.Module) -> int:
    """The side of the input the model runs at: its weights' transforms' crop size (299 for
    Inception-v3, 300 for EfficientNet-B3) for a model from :func:`load_model`; the size a
    vision transformer was built for (torchvision's ``image_size``, timm's
    ``patch_embed.img_size``); else 224."""
    return own_side(model)


@api(renamed={"model_or_name": "model"})
@runs_model
def list_layers(model: ModelLike, input_size: Optional[int] = None, *,
                all_modules: bool = False, device: Optional[str] = None,
                precision: Optional[str] = None) -> List[Layer]:
    """One :class:`Layer` per named layer, in network order.

    Args:
        model: a zoo name (built with random weights; geometry doesn't depend on them) or
            any ``nn.Module`` (in eval mode: its shapes are measured by a forward pass).
        input_size: side of the square input the shapes are computed for; by default the
            model's own (:func:`own_input_size`).
        all_modules: list every module path, not only the aliases (always so for models
            that have no aliases).
        device: where the measuring pass runs (docs/api.md).
        precision: ``"exact"`` or ``"tf32"`` (docs/api.md).

    Examples:
        >>> [l.rf_size for l in list_layers("zfnet") if l.alias == "conv3"]
        [75]
    """
    if isinstance(model, str):
        model = load_model(model, weights=None)
        if device is not None:
            model = model.to(device_for(model, device))
    traced = trace(model)
    size = own_input_size(model) if input_size is None else int(input_size)
    return layers_of(traced, aliases_of(model), measure(traced, (size, size)),
                     all_modules=all_modules)


@dataclass(frozen=True)
class Measured:
    """Every node's output shape and receptive field for one input size."""

    size: Tuple[int, int]
    shapes: Mapping[str, torch.Size]
    geometry: Mapping[str, Optional[Geometry]]


def measure(traced: TracedModel, size: Tuple[int, int]) -> Measured:
    """Shapes and receptive fields of every node, from one forward pass of a zero image of
    ``size`` (height, width)."""
    x = torch.zeros(1, 3, *size, device=model_device(traced.model),
                    dtype=model_dtype(traced.model))
    recording = record_nodes(traced, x, {}, switches=False)
    return Measured(tuple(size), recording.shapes, geometry(traced, recording.shapes))


def layer_of(traced: TracedModel, aliases: Mapping[str, str], name: str,
             measured: Measured,
             resolved: Optional[Tuple[Optional[str], str, str]] = None) -> Layer:
    """The :class:`Layer` named ``name`` (alias, module path or ``path@k``; ``resolved``: its
    :func:`resolve_layer`, if known)."""
    alias, path, node = resolved or resolve_layer(traced, name, aliases)
    if node not in measured.shapes:
        raise UnknownLayerError(f"layer {name!r} does not output a tensor (its module returns "
                                f"a tuple or a list); pick a module inside it")
    g = measured.geometry.get(node)
    shape = tuple(measured.shapes[node][1:])
    axes = channel_axes(traced, measured.shapes, need=[node])
    axis = axes.get(node)
    tokens = token_grids(traced, measured.shapes).get(node) if axis == 2 else None
    if axis == 3:
        shape = (shape[2], shape[0], shape[1])
    elif tokens is not None:
        shape = (shape[1], *tokens.grid)
    return Layer(alias=alias, path=path, shape=shape,
                 rf_size=g.size[0] if g else measured.size[0],
                 rf_stride=g.stride[0] if g else None, geometry=g, node=node,
                 channels_last=axis == 3, tokens=tokens,
                 patches=measured.geometry.get(tokens.source) if tokens is not None else None,
                 whole_image=None if g is not None else whole_image(
                     alias or path, mixing_op(traced, measured.geometry, node), tokens),
                 no_features=no_channels(alias or path, measured.shapes[node],
                                         constant=node not in axes) if axis is None else None)


def layers_of(traced: TracedModel, aliases: Mapping[str, str], measured: Measured, *,
              all_modules: bool = False) -> List[Layer]:
    """Every named layer that outputs a tensor, in network order: the aliases, and with
    ``all_modules`` (or for models without aliases) every module path."""
    names = list(aliases)
    if all_modules or not aliases:
        known = set(aliases.values())
        for path, nodes in traced.module_outputs.items():
            if path and path not in known:
                names += [path] if len(nodes) == 1 else [f"{path}@{i}" for i in range(len(nodes))]
    order = {name: i for i, name in enumerate(traced.ops)}
    layers = []
    for name in names:
        node = resolve_layer(traced, name, aliases)[2]
        if node in measured.shapes:  # not a module returning a tuple
            layers.append(layer_of(traced, aliases, name, measured))
    layers.sort(key=lambda l: (order[l.node], l.alias is None))
    return layers
