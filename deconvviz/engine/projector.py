"""Projecting activations back to pixels: the engine's front door.

A :class:`Projector` traces a model once, records forward passes, and runs a method's reverse
pass (a :class:`~deconvviz.engine.catalogue.rules.RuleSet`) from any layer down to the input, on full-size
maps or inside each activation's receptive-field cone. :class:`Deconvnet` is the projector of
Zeiler & Fergus's deconvnet; the rules of each op kind are listed in the documentation
("How the deconvnet is computed"), generated from the registered rules.

Every op on the path takes the method's rule for its kind, or the method's fallback (the op's
exact vector-Jacobian product at the recorded forward point); an op neither fits (one autograd
cannot differentiate) raises :class:`~deconvviz.errors.UnsupportedOpError` naming the op and
where it is: deconvviz never falls back to a plain gradient.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._signatures import api
from ..choices import MODES, check_mode
from ..data.devices import model_device
from ..data.images import ImagesArg, load_images
from ..data.zoo import model_info
from ..errors import ArgumentError
from .catalogue.methods import DECONVNET, GRADIENT, GUIDED, get_method
from .catalogue.rules import RuleSet
from .guard import runs_model
from .passes.cone_plan import project_cone, units_in_cone
from .passes.graph import TracedModel, trace
from .passes.layers import (
    Layer,
    Measured,
    aliases_of,
    layer_of,
    layers_of,
    measure,
    own_input_size,
    resolve_layer,
)
from .passes.plan import memory_budget, rec_device
from .passes.recording import (
    Recording,
    channel_axes,
    check_images,
    features_first,
    record_nodes,
)
from .passes.reverse import FullSize, ReversePass, ReverseStep, run
from .passes.seeds import Feature, _check_features, _check_seed, make_seeds, token_seeds
from .passes.steps import build_reverse_pass
from .precision import check_precision

__all__ = ["Projector", "Deconvnet", "GuidedBackprop", "Gradient", "ReverseStep", "ReversePass",
           "MODES"]


class Projector:
    """A reverse-pass method attached to any CNN: projects activations back to pixels.

    Args:
        model: the network (a zoo model from :func:`load_model`, or any ``nn.Module`` that
            ``torch.fx`` can trace). It is never modified: no hooks, no module swaps.
        method: the rule set, or the name of a reverse-pass method
            (:func:`deconvviz.list_methods`); by default the class's own (:class:`Deconvnet`:
            the deconvnet).
        aliases: layer aliases (name -> module path); by default the zoo's, if any.
        max_memory: bytes the reverse pass may use for its signals; seeds are processed in
            chunks that fit. By default 512 MiB on a CPU, a quarter of the free memory on a
            GPU (:func:`deconvviz.engine.passes.plan.memory_budget`).
        precision: ``"exact"`` (float32 throughout, TF32 off on CUDA) or ``"tf32"`` (faster
            on GPUs, not exact; see :mod:`deconvviz.engine.precision`); ``None`` (default):
            that of the deconvviz call it runs in, else ``"exact"``.
    """

    method: RuleSet = DECONVNET

    def __init__(self, model: nn.Module, *, method: Union[None, str, RuleSet] = None,
                 aliases: Optional[Mapping[str, str]] = None,
                 max_memory: Optional[int] = None, precision: Optional[str] = None) -> None:
        self.precision = check_precision(precision) if precision is not None else None
        if method is not None:
            self.method = get_method(method) if isinstance(method, str) else method
        self.model = model
        self.traced: TracedModel = trace(model)
        self.aliases: Dict[str, str] = dict(aliases) if aliases is not None else aliases_of(model)
        self.max_memory = int(max_memory) if max_memory is not None else None
        self._layers: Dict[Tuple[int, int], Measured] = self.traced.measured  # shared
        # each layer name resolved once, each reverse pass built once (per method)
        self._resolved: Dict[str, Tuple[Optional[str], str, str]] = {}
        self._passes: Dict[Tuple[int, str], "ReversePass"] = {}

    def with_method(self, method: Union[str, RuleSet]) -> "Projector":
        """This projector with another method: the same model, trace, aliases and measured
        layers (nothing is traced or measured again).

        Examples:
            >>> guided = Deconvnet(model).with_method("guided")
        """
        other = Projector.__new__(Projector)
        other.__dict__.update(self.__dict__)  # shares the trace and the measured layers
        other.method = get_method(method) if isinstance(method, str) else method
        return other

    def __repr__(self) -> str:
        name = getattr(model_info(self.model), "name", None) or type(self.model).__name__
        return (f"{type(self).__name__}({name}, method={self.method.name!r}, "
                f"{len(self.layers)} named layers, device={self.device})")

    # -- layers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model computes (:func:`~deconvviz.data.devices.model_device`)."""
        return model_device(self.model)

    @property
    def input_size(self) -> Tuple[int, int]:
        """The input size the model runs at: its weights' transforms' crop (299 for
        Inception-v3), 224 for a model deconvviz knows nothing about."""
        side = own_input_size(self.model)
        return (side, side)

    @property
    def layers(self) -> List[Layer]:
        """The model's named layers at its own input size (:attr:`input_size`; see
        :func:`list_layers`), measured once."""
        return self.layers_at(self.input_size)

    def layers_at(self, size: Tuple[int, int], *, all_modules: bool = False) -> List[Layer]:
        """The named layers for inputs of ``size`` (height, width), measured once per size."""
        measured = self._measured(size)
        return layers_of(self.traced, self.aliases, measured, all_modules=all_modules)

    def layer(self, name: str, size: Optional[Tuple[int, int]] = None) -> Layer:
        """One layer (alias, module path or ``path@k``), with its shape and receptive field
        for inputs of ``size`` (height, width; default the model's own :attr:`input_size`),
        measured once per size.

        Raises:
            UnknownLayerError: naming the closest matches.
        """
        return layer_of(self.traced, self.aliases, name, self._measured(size or self.input_size),
                        self._resolve(name))

    def _measured(self, size: Tuple[int, int]):
        key = (int(size[0]), int(size[1]))
        if key not in self._layers:
            self._layers[key] = measure(self.traced, key)
        return self._layers[key]

    def _resolve(self, layer: str) -> Tuple[Optional[str], str, str]:
        """``(alias, path, node)`` of a layer name, resolved once (:func:`resolve_layer`)."""
        if not isinstance(layer, str):
            return resolve_layer(self.traced, layer, self.aliases)  # raises, naming the type
        if layer not in self._resolved:
            self._resolved[layer] = resolve_layer(self.traced, layer, self.aliases)
        return self._resolved[layer]

    def _node(self, layer: str) -> str:
        return self._resolve(layer)[2]

    def _reading(self, node: str, rec: Recording):
        """How the node's output ``[N, H, W, C]`` or tokens ``[N, T, C]`` is read channels
        first and a signal handed back (``layout.CHANNELS_LAST``, a ``TokenGrid``); ``None``
        where it is channels first already."""
        if not self._channels_last(node, rec):
            return None
        return features_first(self.traced, [node], rec.input_shape[-2:], refuse=False)[node]

    def _channels_last(self, node: str, rec: Recording) -> bool:
        axes = channel_axes(self.traced, size=rec.input_shape[-2:], need=[node])
        return axes.get(node) in (2, 3)

    def reverse_pass(self, layer: str) -> ReversePass:
        """The steps from ``layer`` down to the input; raises :class:`UnsupportedOpError` if
        any op on that path has no rule in this method, or is in a state it cannot undo."""
        key = (id(self.method), layer)
        if key not in self._passes:
            self._passes[key] = self._reverse_pass(layer)
        else:  # built once; the checks of the model's state (train mode, ...) run every time
            for step in self._passes[key].steps:
                rule = self.method.rule_of(step.op)
                if rule.check is not None:
                    rule.check(step.op, layer)
        return self._passes[key]

    def _reverse_pass(self, layer: str) -> ReversePass:
        return build_reverse_pass(self, layer)

    # -- images and recording ----------------------------------------------------------------
    def _batch(self, images: ImagesArg) -> Tensor:
        """``images`` in any form of :func:`~deconvviz.data.images.load_images` as the checked
        batch ``[N, 3, H, W]`` on the model's device (a batch tensor is taken as it is)."""
        if not (isinstance(images, Tensor) and images.dim() == 4):
            images = load_images(images, self.model)[0].to(self.device)
        return check_images(images, model=self.model)  # the model says where, if it has weights

    @api(renamed={"x": "images"})
    @runs_model
    def record(self, images: ImagesArg, layers: Union[str, Sequence[str]], *,
               refuse: bool = True) -> Recording:
        """Run ``images`` forward once and keep the activations of ``layers`` and the forward
        state the method reads (every max-pool's switches) up to the deepest of them.

        Args:
            images: normalised images ``[N, 3, H, W]`` on the model's device, or any form of
                :func:`~deconvviz.data.images.load_images` (paths, a folder, PIL images,
                ``[3, H, W]``), preprocessed for the model.
            layers: one layer name or several.
            refuse: refuse a layer without channels (tokens on no patch grid: its features
                could not be read); ``False`` keeps it as computed, for a signal shaped like it.

        Returns:
            A :class:`~deconvviz.engine.passes.recording.Recording`; ``rec.activations[layer]`` is
            ``[N, C, h, w]``, ``rec.switches`` maps each pool to its indices.
        """
        return self._record(self._batch(images), layers, refuse=refuse)

    def _record(self, x: Tensor, layers: Union[str, Sequence[str]], *,
                refuse: bool = True) -> Recording:
        return record_nodes(self.traced, x, refuse=refuse, **self.recorded_state(layers))

    def recorded_state(self, layers: Union[str, Sequence[str]]) -> Dict[str, object]:
        """What :meth:`record` keeps of a forward pass for ``layers`` and this method's
        reverse passes, as :func:`~deconvviz.engine.passes.recording.record_nodes` takes it:
        ``keep`` (node -> layer), ``switches``, ``inputs``, ``arguments``."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        needs: Dict[str, frozenset] = {}
        for op in self.traced.ops.values():
            rule = self.method.rule_of(op) if op.inputs else None
            if rule is not None:
                needs[op.name] = rule.needs
        wanted = set(self.method.needs).union(*needs.values())
        return dict(keep={self._node(layer): layer for layer in layers},
                    switches="switches" in wanted,
                    inputs=[name for name, n in needs.items() if "input" in n],
                    arguments=[name for name, n in needs.items() if "arguments" in n])

    # -- projection -----------------------------------------------------------------------
    @api(renamed={"x": "images", "feature": "features", "seed": "signal"}, legacy=("features",))
    @runs_model
    def project(self, images: ImagesArg, layer: str, *, features: Optional[Feature] = None,
                mode: str = "max", signal: Optional[Tensor] = None,
                recording: Optional[Recording] = None, cone: Optional[bool] = None,
                token: Optional[str] = None) -> Tensor:
        """Project activations of ``layer`` back to pixel space.

        Args:
            images: normalised images ``[N, 3, H, W]`` on the model's device, or any form of
                :func:`~deconvviz.data.images.load_images` (paths, a folder, PIL images,
                ``[3, H, W]``), preprocessed for the model.
            layer: an alias (``"conv3_3"``) or module path (``"features.15"``).
            features: a channel index, or a list of them (one projection each).
            mode: ``"max"``: only the feature's strongest activation in each image keeps its
                value (first in row-major order on ties); ``"map"``: the feature's whole map.
            signal: instead of ``features``: any tensor shaped like the layer's activation
                ``[N, C, h, w]`` (or ``[N, K, C, h, w]`` for K signals per image).
            recording: a :class:`Recording` of ``images`` holding ``layer`` (skips the
                forward).
            cone: for ``mode="max"``, compute each projection only inside its receptive-field
                cone (the same result, much faster for shallow and middle layers). ``None``
                (default): the faster exact plan for this layer and device
                (:mod:`deconvviz.engine.passes.plan`: the cone's share of the multiply-adds against
                its rate on the device, measured once on a GPU near the break-even point);
                ``True``: the cone wherever the layer allows it; ``False``: always the
                full-size pass.
            token: for a ViT's token layer, a named token (``"cls"``; ``"dist"``, ``"reg0"``
                where the model has them: :attr:`Layer.tokens`): project each feature's unit
                at that token instead of its strongest patch.

        Returns:
            ``[N, 3, H, W]`` for one feature or a signal; ``[N, K, 3, H, W]`` for a list of K
            features (or signals ``[N, K, ...]``).

        Examples:
            >>> p = Deconvnet(model).project("photo.jpg", "conv3", features=[3, 7])
        """
        return self._project(self._batch(images), layer, features=features, mode=mode,
                             signal=signal, recording=recording, cone=cone, token=token)

    def _project(self, x: Tensor, layer: str, *, features: Optional[Feature] = None,
                 mode: str = "max", signal: Optional[Tensor] = None,
                 recording: Optional[Recording] = None, cone: Optional[bool] = None,
                 token: Optional[str] = None) -> Tensor:
        """:meth:`project` on a checked batch, unguarded (for loops inside a guarded call)."""
        check_mode(mode)
        if (features is None) == (signal is None):
            raise ArgumentError("give exactly one of features= (channel index or list) or "
                                "signal=")
        steps, recording, act, node = self._prepare(x, layer, recording,
                                                    features=signal is None)
        if token is not None:
            chosen, single = _check_features(features, act.shape[1], layer)
            grid = self.layer(layer, tuple(recording.input_shape[-2:])).tokens
            make = token_seeds(grid, recording, layer, chosen, token, mode)
            out = self._reverse_in_chunks(steps, recording, node, make, len(chosen),
                                          act.shape[0])
            return out[:, 0] if single else out
        if signal is not None:
            seeds, single = _check_seed(signal, act)
            make = lambda k0, k1: seeds[:, k0:k1]  # noqa: E731
            count = seeds.shape[1]
        else:
            chosen, single = _check_features(features, act.shape[1], layer)
            make = lambda k0, k1: make_seeds(act, chosen[k0:k1], mode)  # noqa: E731
            count = len(chosen)
            if mode == "max" and cone is not False:
                out = project_cone(self, steps, recording, node, act, chosen, cone is True,
                                   make)
                if out is not None:
                    return out[:, 0] if single else out
        out = self._reverse_in_chunks(steps, recording, node, make, count, act.shape[0])
        return out[:, 0] if single else out

    def _prepare(self, x: Tensor, layer: str, recording: Optional[Recording],
                 features: bool = True):
        """Steps, a recording of the checked batch ``x`` holding ``layer``, its activation and
        node (``features=False``: for a signal, which reads no features: a layer without
        channels is not refused)."""
        steps = self.reverse_pass(layer)
        if recording is None or layer not in recording.activations:
            recording = self._record(x, layer, refuse=features)
        return steps, recording, recording.activations[layer], self._node(layer)

    @api(renamed={"x": "images", "units": "positions"}, legacy=("positions",))
    @runs_model
    def project_units(self, images: ImagesArg, layer: str, *,
                      positions: Sequence[Tuple[int, int, int, int]],
                      recording: Optional[Recording] = None) -> Tensor:
        """Project single activations chosen by position: each is ``(image, feature, y, x)``
        (y = x = 0 for fully-connected layers), seeded with its own value.

        Args:
            images: as for :meth:`project`.
            layer: an alias or module path.
            positions: ``(image, feature, y, x)`` of each activation.
            recording: a :class:`Recording` of ``images`` holding ``layer``.

        Returns:
            ``[S, 3, H, W]``, one projection per unit, computed in the receptive-field cone
            where that is cheaper than the full-size pass.
        """
        units = positions
        x = self._batch(images)
        steps, recording, act, node = self._prepare(x, layer, recording)
        if not units:
            raise ArgumentError("no positions to project")
        images, features, ys, xs = (torch.tensor(c, device=act.device) for c in zip(*units))
        n, c = act.shape[:2]
        h, w = (act.shape[-2], act.shape[-1]) if act.dim() == 4 else (1, 1)
        bad = ((images < 0) | (images >= n) | (features < 0) | (features >= c) | (ys < 0)
               | (ys >= h) | (xs < 0) | (xs >= w))
        if bool(bad.any()):
            first = units[int(bad.nonzero()[0])]
            raise ArgumentError(f"unit {first} is outside layer {layer!r} of shape "
                                f"{list(act.shape)}")
        values = act[images, features, ys, xs] if act.dim() == 4 else act[images, features]
        out = units_in_cone(self, steps, recording, node, images, features, ys, xs, values)
        if out is not None:
            return out
        seeds = act.new_zeros(len(units), *act.shape[1:])
        index = (torch.arange(len(units)), features, ys, xs) if act.dim() == 4 else \
            (torch.arange(len(units)), features)
        seeds[index] = values
        # Each unit's signal goes with its own image's recording: group them per image.
        out = act.new_zeros(len(units), *recording.input_shape[1:])
        for image in images.unique().tolist():
            mine = (images == image).nonzero()[:, 0]
            out[mine] = self._project(x[image:image + 1], layer, signal=seeds[mine][None],
                                      recording=recording.image(image))[0]
        return out

    def _reverse_in_chunks(self, steps: ReversePass, rec: Recording, node: str,
                           make: Callable[[int, int], Union[Tensor, Tuple[Tensor, Tensor]]],
                           count: int, n: int) -> Tensor:
        per_seed = 4 * 4 * max(math.prod(s[1:]) for s in rec.shapes.values()) * n
        budget = memory_budget(self.max_memory, rec_device(rec))
        chunk = max(1, min(count, budget // max(per_seed, 1)))
        parts = []
        with torch.no_grad():
            for k0 in range(0, count, chunk):
                seeds = make(k0, min(count, k0 + chunk))
                parts.append(self._reverse(steps, rec, node, seeds))
        return torch.cat(parts, dim=1)

    def _reverse(self, steps: ReversePass, rec: Recording, node: str,
                 seeds: Union[Tensor, Tuple[Tensor, Tensor]]) -> Tensor:
        """``seeds`` ``[N, K, C, h, w]``, channels first; for a ViT's token layer, a pair
        (the seeds on the patch grid, those of the named tokens ``[N, K, P, C]``)."""
        seeds, named = seeds if isinstance(seeds, tuple) else (seeds, None)
        n, k = seeds.shape[:2]
        start = {node: seeds.reshape(n * k, *seeds.shape[2:])}
        reading = self._reading(node, rec)
        if reading is not None:  # seeds are channels first, as every layer's features
            start[node] = reading.layer(start[node], None if named is None
                                        else named.reshape(n * k, *named.shape[2:]))
        signals = run(steps.ops, start, FullSize(self.method, rec, n, k, self.traced,
                                                 steps.folded))
        shape = rec.input_shape
        pixels = signals.get(self.traced.input_node.name)
        if pixels is None:
            pixels = seeds.new_zeros((n * k, *shape[1:]))
        return pixels.reshape(n, k, *shape[1:])


class Deconvnet(Projector):
    """A Zeiler-Fergus deconvnet attached to any CNN.

    Args:
        model: the network (a zoo model from :func:`load_model`, or any ``nn.Module`` that
            ``torch.fx`` can trace). It is never modified: no hooks, no module swaps.
        aliases: layer aliases (name -> module path); by default the zoo's, if any.
        max_memory: bytes the reverse pass may use for its signals; seeds are processed in
            chunks that fit (by default 512 MiB on a CPU, a quarter of a GPU's free memory).
        precision: ``"exact"`` (default) or ``"tf32"`` (see :class:`Projector`).

    Examples:
        >>> net = Deconvnet(load_model("vgg16", weights=None))
        >>> p = net.project(x, "conv3_3", features=12)           # [N, 3, H, W]
        >>> p = net.project(x, "features.15", features=[3, 7])   # [N, 2, 3, H, W]
        >>> print(net.reverse_pass("conv3_3"))                       # one line per step
    """

    method = DECONVNET


class GuidedBackprop(Projector):
    """Guided backpropagation (Springenberg et al., 2015) attached to any CNN: the same
    interface, cone and errors as :class:`Deconvnet`; at every ReLU the signal is rectified
    and masked by the forward input's sign, every other op takes its true gradient.

    Examples:
        >>> p = GuidedBackprop(model).project(x, "conv4_3", features=[0, 1])
    """

    method = GUIDED


class Gradient(Projector):
    """The plain gradient of a unit (seeded with its value, as the deconvnet is) with
    respect to the input, computed by the same engine: every op takes its true gradient.

    Examples:
        >>> p = Gradient(model).project(x, "conv4_3", features=3)
    """

    method = GRADIENT
