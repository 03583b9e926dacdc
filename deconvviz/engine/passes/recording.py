"""Recording one forward pass: the activations asked for and the switches of every max-pool.

The traced graph is run by a ``torch.fx`` interpreter that shares the model's modules, so no
hook is ever registered on the user's model and nothing can leak. Max-pools, whether
``nn.MaxPool2d`` modules or functional ``max_pool2d`` calls, are run with
``return_indices=True``: the indices are the switches of Zeiler & Fergus, the position of
each pooling region's maximum, as flat offsets into each channel of the pool's input.
The run stops as soon as the deepest requested layer is computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.devices import model_device, model_dtype
from ...errors import ArgumentError, UnsupportedOpError, first_line
from .graph import TracedModel
from .layout import CHANNELS_LAST, TO_CHANNELS_FIRST, channel_axes_of, no_channels
from .tokens import TokenGrid, token_grids_of, tokens_to_map

__all__ = ["Recording", "record_nodes", "check_images", "images_for", "forward_to", "channel_axes",
           "features_first", "token_grids", "own_side"]


@dataclass
class Recording:
    """What one forward pass of a batch left behind.

    Attributes:
        activations: requested layer -> its output, ``[N, C, h, w]`` (or ``[N, C]``).
        switches: max-pool -> indices ``[N, C, h, w]``: for each pooled unit, the flat offset
            (``row * W + col``) of its maximum in that channel of the pool's ``H x W`` input.
            Keys are module paths (``features.pool1``) or, for functional calls, graph node
            names.
        shapes: graph node name -> output shape, for every tensor computed.
        input_shape: shape of the image batch.
        inputs: graph node name -> the op's (first) input, for ops whose reverse rule reads
            it (a method that needs ``"input"``; empty for the deconvnet).
        arguments: graph node name -> {argument node name: its value} for ops whose reverse
            reads every tensor they take (``"arguments"``: the exact vector-Jacobian
            product at the recorded point, a gate's value): the arguments from the image.
        constants: argument node name -> value, for those arguments that do not come from
            the image (shared by every image of the batch).
        named_tokens: requested token layer (a ViT's) -> its named tokens ``[N, P, C]``
            (the class token...), which its activation on the patch grid leaves out.
    """

    activations: Dict[str, Tensor] = field(default_factory=dict)
    switches: Dict[str, Tensor] = field(default_factory=dict)
    shapes: Dict[str, torch.Size] = field(default_factory=dict)
    input_shape: Optional[torch.Size] = None
    switch_keys: Dict[str, str] = field(default_factory=dict, repr=False)
    inputs: Dict[str, Tensor] = field(default_factory=dict, repr=False)
    arguments: Dict[str, Dict[str, Tensor]] = field(default_factory=dict, repr=False)
    constants: Dict[str, object] = field(default_factory=dict, repr=False)
    named_tokens: Dict[str, Tensor] = field(default_factory=dict, repr=False)
    # what a method computes once per recording and reuses (LRP's denominators)
    cache: Dict[object, object] = field(default_factory=dict, repr=False)

    def switches_of(self, node_name: str) -> Tensor:
        """The switches recorded at graph node ``node_name``."""
        return self.switches[self.switch_keys[node_name]]

    def image(self, index: int) -> "Recording":
        """The recording of one image of the batch (a batch of one)."""
        one = slice(index, index + 1)
        return Recording(
            activations={k: v[one] for k, v in self.activations.items()},
            switches={k: v[one] for k, v in self.switches.items()},
            shapes={k: torch.Size((1, *v[1:])) for k, v in self.shapes.items()},
            input_shape=torch.Size((1, *self.input_shape[1:])), switch_keys=self.switch_keys,
            inputs={k: v[one] for k, v in self.inputs.items()},
            arguments={k: {a: _take(v, one) for a, v in args.items()}
                       for k, args in self.arguments.items()},
            constants=self.constants,
            named_tokens={k: v[one] for k, v in self.named_tokens.items()})

    def __repr__(self) -> str:
        acts = ", ".join(f"{k}: {list(v.shape)}" for k, v in self.activations.items())
        pools = ", ".join(self.switches)
        return (f"Recording(input {list(self.input_shape or [])}; activations {{{acts}}}; "
                f"switches of {len(self.switches)} max-pools: {pools})")


def _take(value, index):
    if isinstance(value, (tuple, list)):
        return type(value)(_take(v, index) for v in value)
    return value[index]


class _Stop(Exception):
    pass


class _Recorder(fx.Interpreter):
    def __init__(self, traced: TracedModel, keep: Mapping[str, str], switches: bool,
                 inputs: Collection[str], arguments: Collection[str] = ()):
        super().__init__(traced.graph_module, garbage_collect_values=True)
        self.switches, self.inputs, self.arguments = switches, set(inputs), set(arguments)
        self.ops = traced.ops
        self.keep = dict(keep)  # node name -> the name the caller asked for
        self.pending = set(keep)
        self.recording = Recording()
        self.pool_calls: Dict[str, int] = {}
        for op in traced.ops.values():
            if op.kind == "maxpool":
                self.pool_calls[op.where] = self.pool_calls.get(op.where, 0) + 1
        self.pools_seen: Dict[str, int] = {}

    def _pool_key(self, op) -> str:
        # A module's path names its switches; a module called k times gets path@0..path@k-1.
        if op.node.op != "call_module":
            return op.name
        if self.pool_calls[op.where] == 1:
            return op.where
        seen = self.pools_seen.get(op.where, 0)
        self.pools_seen[op.where] = seen + 1
        return f"{op.where}@{seen}"

    def run_node(self, n: fx.Node):
        op = self.ops[n.name]
        if n.name in self.inputs:
            # Cloned: an in-place op (ReLU(inplace=True)) would overwrite it.
            self.recording.inputs[n.name] = self.env[op.inputs[0]].detach().clone()
        if n.name in self.arguments:  # before the op runs: it may change them in place
            kept = self.recording.arguments[n.name] = {}
            for arg in _nodes((n.args, n.kwargs)):
                value = _detached(self.env[arg])
                if arg in op.inputs:
                    kept[arg.name] = value
                else:
                    self.recording.constants[arg.name] = value
        if op.kind == "maxpool" and self.switches:
            args, _ = self.fetch_args_kwargs_from_env(n)
            p = op.params
            out, indices = F.max_pool2d(args[0], p["kernel"], p["stride"], p["padding"],
                                        p["dilation"], p["ceil_mode"], return_indices=True)
            key = self._pool_key(op)
            self.recording.switches[key] = indices
            self.recording.switch_keys[n.name] = key
        else:
            out = super().run_node(n)
        if isinstance(out, Tensor):
            self.recording.shapes[n.name] = out.shape
        if n.name in self.keep:
            # Cloned: a later in-place op (ReLU(inplace=True)) must not change what we keep.
            self.recording.activations[self.keep[n.name]] = out.detach().clone()
            self.pending.discard(n.name)
            if not self.pending:
                raise _Stop
        return out


def _nodes(args):
    found = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _detached(value):
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value


def check_images(x: object, device: Optional[torch.device] = None, *,
                 model: Optional[nn.Module] = None) -> Tensor:
    """Check that ``x`` is a float image batch ``[N, C, H, W]`` the model can take (its
    device, its weights' dtype, its first convolution's channels); raise
    :class:`ArgumentError` saying what is accepted."""
    if not isinstance(x, Tensor):
        raise ArgumentError(f"images must be a torch.Tensor [N, 3, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ArgumentError(f"images must be a batch [N, C, H, W], got shape {list(x.shape)}"
                            + (" (add a batch dimension with x[None])" if x.dim() == 3 else ""))
    if not x.is_floating_point():
        raise ArgumentError(f"images must be floating point (normalised), got {x.dtype}; "
                            f"use deconvviz.load_image to prepare them")
    if model is not None:
        dtype = model_dtype(model)
        if dtype is not None:  # a model with weights: they say where and in what it computes
            device = model_device(model) if device is None else device
            if x.dtype != dtype:
                raise ArgumentError(f"images are {x.dtype} but the model's weights are "
                                    f"{dtype}; convert them with x.to({dtype})")
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None and x.shape[1] != conv.in_channels:
            raise ArgumentError(
                f"images have {x.shape[1]} channel(s) but the model's first convolution takes "
                f"{conv.in_channels}" + (" (repeat a grey channel: x.expand(-1, 3, -1, -1))"
                                         if x.shape[1] == 1 and conv.in_channels == 3 else ""))
    if device is not None and x.device != device:
        raise ArgumentError(f"images are on {x.device} but the model is on {device}")
    return x


def record_nodes(traced: TracedModel, x: Tensor, keep: Mapping[str, str], *,
                 switches: bool = True, inputs: Collection[str] = (),
                 arguments: Collection[str] = (), partial: bool = False,
                 channels_first: bool = True, refuse: bool = True) -> Recording:
    """Run ``x`` through the traced model, stopping once every node in ``keep`` is computed.

    Args:
        traced: the traced model.
        x: images ``[N, 3, H, W]``.
        keep: graph node name -> the key its activation is stored under, channels first
            (a channels-last map ``[N, H, W, C]`` is kept as ``[N, C, H, W]``; with
            ``channels_first=False``, as computed).
        switches: keep every max-pool's switches.
        inputs: graph node names whose op's input to keep (``Recording.inputs``).
        arguments: graph node names whose op's every argument to keep
            (``Recording.arguments``).
        partial: where the model cannot run on ``x``, return what was recorded up to there
            instead of raising.
        refuse: refuse a node of ``keep`` without channels (else keep it as computed: for a
            projection of a seed shaped like it, which reads no features).

    Raises:
        UnsupportedOpError: a node of ``keep`` whose output has no channels deconvviz can
            find (tokens on no patch grid).
    """
    recorder = _Recorder(traced, keep, switches, inputs, arguments)
    recorder.recording.input_shape = x.shape
    with torch.no_grad():
        try:
            recorder.run(x)
        except _Stop:
            pass
        except (RuntimeError, AssertionError) as exc:
            if partial:
                return recorder.recording
            if isinstance(exc, AssertionError):  # a guard of a graph torch.export captured
                guard = first_line(exc).replace("Guard failed: ", "")
                raise ArgumentError(
                    f"the model cannot run on images of shape {list(x.shape)}: its forward "
                    f"was captured by torch.export for inputs where {guard}") from None
            # the model cannot take this input (too small, ...)
            raise ArgumentError(f"the model cannot run on images of shape {list(x.shape)}: "
                                f"{first_line(exc)}" + (
                                    "; pass the input size the model was made for "
                                    "(input_size=N; CLI: --input-size N)"
                                    if _too_small(exc) else "")) from None
    rec = recorder.recording
    if keep and channels_first:
        read_features(rec, features_first(traced, keep, shapes=rec.shapes, refuse=refuse), keep)
    return rec


def read_features(rec: Recording, readings: Mapping[str, object],
                  keep: Mapping[str, str]) -> None:
    """Turn the kept activations of ``readings``' nodes channels first (a token layer's: its
    patch tokens on the grid, its named tokens in ``rec.named_tokens``)."""
    for node, reading in readings.items():
        act = rec.activations[keep[node]]
        if isinstance(reading, TokenGrid):
            rec.named_tokens[keep[node]] = reading.named(act).contiguous()
        rec.activations[keep[node]] = reading.features(act).contiguous()


def channel_axes(traced: TracedModel, shapes: Optional[Mapping[str, torch.Size]] = None, *,
                 size: Optional[Sequence[int]] = None,
                 need: Collection[str] = ()) -> Dict[str, Optional[int]]:
    """Node name -> the axis holding its channels (see
    :func:`~deconvviz.engine.passes.layout.channel_axes_of`), for inputs of one size: from the
    shapes at that size (``shapes``, where a forward pass already recorded them, else by a
    forward pass at ``size``, by default the model's own input size) and at half that size.
    Found once per size, and again where a node of ``need`` is missing.

    A layer's features are its channels whatever the memory layout: every caller that reads
    features (projections, scans, layer tables) reads this."""
    key = _size_key(traced, shapes, size)
    found = traced.channel_axes if traced.channel_axes is not None else {}
    known = found.get(key)
    complete = traced.__dict__.setdefault("_complete_axes", set())
    seen = traced.__dict__.get("_measured_shapes", {}).get(key, {})  # constants included
    if known is None or (key not in complete and any(n not in seen for n in need)):
        channels = shapes[traced.input_node.name][1] if shapes is not None else _channels(traced)
        if shapes is None or any(n not in shapes for n in need):
            shapes = _shapes_at(traced, key, channels)  # the whole model (as far as it runs)
            complete.add(key)
        probe = _shapes_at(traced, (max(key[0] // 2, 32), max(key[1] // 2, 32)), channels)
        traced.__dict__.setdefault("_measured_shapes", {})[key] = dict(shapes)
        axes = channel_axes_of(traced.ops.values(), shapes, probe)
        grids = token_grids_of(traced.ops.values(), shapes, axes)
        axes.update({node: 2 for node in grids})  # tokens [N, T, C]: the features are last
        traced.__dict__.setdefault("_token_grids", {})[key] = grids
        found[key] = axes
        traced.channel_axes = found
    return found[key]


def own_side(model: nn.Module) -> int:
    """:func:`~deconvviz.engine.passes.layers.own_input_size`."""
    from ...data.zoo import model_info

    info = model_info(model)
    if info is not None:
        return int(info.preprocessing.crop_size)
    # a transformer built for one size says it: torchvision's ViT, timm's patch embedding
    side = getattr(model, "image_size", None) or getattr(
        getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(side, (tuple, list)) and len(side) == 2 and side[0] == side[1]:
        side = side[0]
    return side if isinstance(side, int) and not isinstance(side, bool) else 224


def _size_key(traced: TracedModel, shapes, size) -> Tuple[int, int]:
    if shapes is not None:
        size = tuple(shapes[traced.input_node.name][-2:])
    elif size is None:
        side = own_side(traced.model)
        size = (side, side)
    return (int(size[0]), int(size[1]))


def token_grids(traced: TracedModel, shapes: Optional[Mapping[str, torch.Size]] = None, *,
                size: Optional[Sequence[int]] = None,
                need: Collection[str] = ()) -> Dict[str, TokenGrid]:
    """Node name -> the :class:`~deconvviz.engine.passes.tokens.TokenGrid` of each node whose
    tokens lie on the patch grid, for inputs of one size (as :func:`channel_axes`)."""
    channel_axes(traced, shapes, size=size, need=need)
    return traced.__dict__["_token_grids"].get(_size_key(traced, shapes, size), {})


def _channels(traced: TracedModel) -> int:
    conv = next((m for m in traced.model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _shapes_at(traced: TracedModel, size, channels: int) -> Mapping[str, torch.Size]:
    x = torch.zeros(1, channels, *size, device=model_device(traced.model),
                    dtype=model_dtype(traced.model))
    return record_nodes(traced, x, {}, switches=False, partial=True,
                        channels_first=False).shapes


def features_first(traced: TracedModel, nodes: Collection[str],
                   size: Optional[Sequence[int]] = None,
                   shapes: Optional[Mapping[str, torch.Size]] = None,
                   refuse: bool = True) -> Dict[str, object]:
    """The nodes of ``nodes`` not already channels first, each with how it is read channels
    first (``layout.CHANNELS_LAST`` or its :class:`~deconvviz.engine.passes.tokens.TokenGrid`:
    ``reading.features(output)``, and ``reading.layer(signal)`` back), for inputs of ``size``
    (height, width; default the model's own) or of the recording that gave ``shapes``.

    Raises:
        UnsupportedOpError: for a node without channels deconvviz can find (tokens with no
            patch grid)."""
    axes = channel_axes(traced, shapes, size=size, need=list(nodes))
    grids = token_grids(traced, shapes, size=size)
    measured = traced.__dict__["_measured_shapes"]
    last: Dict[str, object] = {}
    for name in nodes:
        if name not in axes:
            continue  # a constant, or the model cannot run at this size (its own error follows)
        axis = axes[name]
        if axis is None and refuse:
            shape = next(s[name] for s in measured.values() if name in s)
            raise UnsupportedOpError(no_channels(_layer_name(traced, name), shape))
        if axis == 3:
            last[name] = CHANNELS_LAST
        elif axis == 2:
            last[name] = grids[name]
    return last


def _layer_name(traced: TracedModel, node: str) -> str:
    return next((path for path, nodes in traced.module_outputs.items()
                 if any(n.name == node for n in nodes) and path), node)


def _too_small(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in ("size can't be greater", "Output size is too small",
                                   "cannot be multiplied", "shapes cannot be", "mat1 and mat2"))


def forward_to(traced: TracedModel, nodes: Sequence[str],
               size: Optional[Sequence[int]] = None) -> fx.GraphModule:
    """A ``GraphModule`` that runs the model up to the deepest of ``nodes`` (graph node names)
    and returns their outputs (channels first, see :func:`record_nodes`, for inputs of
    ``size``: by default the model's own) as a tuple: a plain forward, with autograd, for scans and for
    methods that differentiate a unit. It shares the model's modules (hooks on them fire)."""
    graph, env = fx.Graph(), {}
    wanted = {traced.ops[n].node for n in nodes}
    last = features_first(traced, nodes, size)
    outputs = {}
    for node in traced.graph_module.graph.nodes:
        if not wanted - set(outputs):
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node in wanted:
            # Copied only where a later in-place op would change the activation we keep.
            outputs[node] = (graph.call_method("clone", (env[node],))
                             if _modified_in_place(node, traced.graph_module) else env[node])
            reading = last.get(node.name)
            if isinstance(reading, TokenGrid):  # tokens: the patch tokens on their grid
                outputs[node] = graph.call_function(tokens_to_map, (
                    outputs[node], len(reading.prefix), *reading.grid))
            elif reading is not None:  # channels last: read channels first, as every layer
                outputs[node] = graph.call_method("permute", (outputs[node],
                                                              *TO_CHANNELS_FIRST))
    graph.output(tuple(outputs[traced.ops[n].node] for n in nodes))
    return fx.GraphModule(traced.graph_module, graph)


def _modified_in_place(node: fx.Node, gm: fx.GraphModule) -> bool:
    for user in node.users:
        if user.kwargs.get("inplace") or (user.op == "call_method" and user.target.endswith("_")):
            return True
        if user.op == "call_module" and getattr(gm.get_submodule(user.target), "inplace", False):
            return True
        if user.op == "call_function" and getattr(user.target, "__name__", "").endswith("_"):
            return True
    return False


def images_for(model: nn.Module, images) -> Tuple[torch.Tensor, list, List[str]]:
    """``images`` in any documented form (:func:`deconvviz.data.images.image_list`) as the
    model takes them: ``(x, rgb, names)``, ``x`` the normalised batch on the model's device,
    checked against the model's input; ``rgb`` each image's uint8 crop; ``names`` its path or
    ``image K``."""
    from ...data.images import load_images

    x, rgb, names = load_images(images, model)
    return check_images(x.to(model_device(model)), model=model), rgb, names
