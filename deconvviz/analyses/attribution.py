"""Attributions by every method, for a class or a unit: the exact reverse passes and Captum's.

:func:`attribute` is the one entry point. The reverse-pass methods (``deconvnet``, ``guided``,
``gradient``) run on deconvviz's engine, exact on every zoo model; the others are Captum's,
used rather than rewritten:

================================  =========================================================
``gradcam``                       Captum's ``LayerGradCam`` at the last convolutional block
                                  (or ``cam_layer``), upsampled bilinearly; ``[N, 1, H, W]``
``guided_gradcam``                deconvviz's exact guided backprop times the upsampled
                                  Grad-CAM (Selvaraju et al.), not Captum's ``GuidedGradCam``,
                                  which misses functional ReLUs
``integrated_gradients``          Captum's ``IntegratedGradients`` from the mean-colour image
``smoothgrad``                    Captum's ``NoiseTunnel`` over the plain gradient
``occlusion``                     Captum's ``Occlusion``: a mean-colour square slid over the
                                  image; attribution = output drop
================================  =========================================================

Targets: a class (``target=`` index or ImageNet class name; default each image's top-1
class), seeded 1 at its logit (pre-softmax) as Captum does; or a unit (``layer=``,
``feature=``, ``mode=``), seeded with its activation (``max``: the strongest unit of the
feature's map; ``map``: the whole map), as :meth:`~deconvviz.engine.Projector.project` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import method_table
from .._signatures import api
from ..choices import check_mode
from ..data.images import ImagesArg
from ..data.zoo import class_names
from ..engine import Projector
from ..engine.guard import runs_model
from ..engine.passes.recording import (
    Recording,
    check_images,
    features_first,
    forward_to,
    images_for,
)
from ..engine.passes.seeds import make_seeds
from ..errors import ArgumentError, closest
from . import attention_maps, cams, map_check
from .attribution_result import Attribution
from .cam_unit import cam_seed, unit_objective

__all__ = ["attribute", "attribute_map", "Attribution", "list_methods", "Target", "resolve_target", "default_cam_layer",
           "grad_cam"]


def list_methods(kind: Optional[str] = None) -> List[str]:
    """Every method :func:`attribute` knows (of ``kind``: ``"reverse pass"`` or
    ``"attribution"``), as :mod:`deconvviz.method_table` lists them."""
    return method_table.names(kind)


@dataclass(frozen=True)
class Target:
    """What is explained: a class per image, or one feature of a layer.

    Attributes:
        classes: the class index of each image (class targets), else ``None``.
        layer, feature, mode: the unit (unit targets), else ``None``.
        names: the class names of the model's output, where it has them.
    """

    classes: Optional[List[int]] = None
    layer: Optional[str] = None
    feature: Optional[int] = None
    mode: str = "max"
    names: Optional[List[str]] = None

    @property
    def is_class(self) -> bool:
        return self.classes is not None

    def label(self, image: int = 0) -> str:
        """``"tabby (281)"``, ``"class 281"`` or ``"conv5_3 #12 (max)"``."""
        if self.is_class:
            c = self.classes[image]
            return f"{self.names[c]} ({c})" if self.names else f"class {c}"
        return f"{self.layer} #{self.feature} ({self.mode})"


def _class_index(target: Union[int, str], names: Optional[List[str]], classes: int) -> int:
    if isinstance(target, str) and not target.strip().lstrip("-").isdigit():
        if not names:
            raise ArgumentError(f"class {target!r}: this model has no class names; give the "
                                f"class index (0 to {classes - 1})")
        lowered = [n.lower() for n in names]
        if target.lower() in lowered:
            return lowered.index(target.lower())
        raise ArgumentError(f"unknown class {target!r}.{closest(target.lower(), lowered)} "
                            f"Classes are ImageNet's category names, or indices 0 to "
                            f"{classes - 1}")
    index = int(target)
    if not 0 <= index < classes:
        raise ArgumentError(f"class {index} is out of range: valid classes are 0 to "
                            f"{classes - 1}")
    return index


def resolve_target(model: nn.Module, x: Tensor, target: Union[None, int, str] = None,
                   layer: Optional[str] = None, feature: Optional[int] = None,
                   mode: str = "max", *, logits: Optional[Tensor] = None) -> Target:
    """The :class:`Target` of an attribution: a unit when ``layer`` is given, else a class
    (``target``, or each image's top-1 class)."""
    check_mode(mode)
    names = class_names(model)
    if layer is not None:
        if target is not None:
            raise ArgumentError("give a class target or a layer and feature, not both")
        if feature is None:
            raise ArgumentError(f"a unit target needs a feature of layer {layer!r}")
        return Target(layer=layer, feature=int(feature), mode=mode, names=names)
    if feature is not None:
        raise ArgumentError("feature= needs layer=")
    if logits is None:
        with torch.no_grad():
            logits = model(x)
    if logits.dim() != 2:
        raise ArgumentError(f"a class target needs a model that returns logits [N, classes]; "
                            f"this one returns {list(logits.shape)}: explain a unit "
                            f"(layer=, feature=) instead")
    if target is None:
        classes = logits.argmax(dim=1).tolist()
    else:
        classes = [_class_index(target, names, logits.shape[1])] * x.shape[0]
    return Target(classes=classes, names=names)


def default_cam_layer(net: Projector) -> str:
    """Grad-CAM's layer: the block that holds the model's last convolution, followed forward
    while the maps keep their spatial size (VGG16: ``conv5_3``, ResNet: ``layer4``,
    DenseNet: ``norm5``, GoogLeNet: ``inception5b``)."""
    traced = net.traced
    measured = net._measured(net.input_size)
    shapes = measured.shapes
    convs = [op for op in traced.ops.values() if op.kind == "conv"]
    if not convs:
        raise ArgumentError("Grad-CAM needs a convolutional layer; this model has none")
    node = convs[-1].node
    outputs: Dict[str, List[str]] = {}
    for path, nodes in traced.module_outputs.items():
        if path and len(nodes) == 1:
            outputs.setdefault(nodes[0].name, []).append(path)
    best = None
    while True:
        if node.name in outputs:
            best = node.name
        following = [u for u in node.users if u.name in shapes and len(shapes[u.name]) == 4
                     and shapes[u.name][-2:] == shapes[node.name][-2:]
                     and traced.ops[u.name].kind not in ("maxpool", "avgpool",
                                                         "adaptive_avgpool")]
        if not following:
            break
        node = following[0]
    if best is None:
        raise ArgumentError("no module outputs the last convolutional block; name one with "
                            "cam_layer=")
    paths = sorted(outputs[best], key=lambda p: (p.count("."), len(p)))
    by_path = {p: a for a, p in net.aliases.items()}
    for path in paths:
        if path in by_path:
            return by_path[path]
    return paths[0]


class _UnitObjective(nn.Module):
    """A unit target as one number per image: the seed (fixed: the activation values on the
    unperturbed image) dotted with the layer's activation. Captum passes the seed along with
    every batch it builds (``additional_forward_args``)."""

    def __init__(self, net: Projector, node: str):
        super().__init__()
        self.forward_to = forward_to(net.traced, [node])

    def forward(self, x: Tensor, seed: Tensor) -> Tensor:
        act = self.forward_to(x)[0]
        return (act * seed).flatten(1).sum(dim=1)


def _unit_seed(net: Projector, x: Tensor, target: Target) -> Tensor:
    act = net.record(x, target.layer).activations[target.layer]
    if not 0 <= target.feature < act.shape[1]:
        raise ArgumentError(f"feature {target.feature} is out of range for layer "
                            f"{target.layer!r}: valid features are 0 to {act.shape[1] - 1}")
    return make_seeds(act, [target.feature], target.mode)[:, 0]


@api(renamed={"x": "images", "feature": "features"},
     legacy=("method", "target", "layer", "features", "mode"))
@runs_model
def attribute(model: nn.Module, images: ImagesArg, *, method: str,
              target: Union[None, int, str] = None, layer: Optional[str] = None,
              features: Optional[int] = None, mode: str = "max",
              cam_layer: Optional[str] = None, device: Optional[str] = None,
              precision: Optional[str] = None, **options) -> "Attribution":
    """Explain a class or a unit with one method, at the input's resolution.

    Args:
        model: the network (eval mode; it is never changed: Captum's hooks are removed on
            every path, errors included).
        images: photos in any form of the glossary (docs/api.md): a path, a folder, a
            ``PIL.Image``, a normalised tensor ``[N, 3, H, W]`` or ``[3, H, W]``, or a list.
        method: one of :func:`list_methods`.
        target: a class index or ImageNet class name (default: each image's top-1 class).
        layer: explain a unit of this layer instead (alias or module path).
        features: the unit's feature (channel index).
        mode: ``"max"`` (the feature's strongest activation) or ``"map"`` (its whole map).
        cam_layer: Grad-CAM's layer (default :func:`default_cam_layer`).
        **options (Any): passed to the Captum method: ``n_steps`` (integrated gradients, default
            32), ``nt_samples`` and ``stdev`` (SmoothGrad: 16 samples, noise 0.15 of the
            input's range), ``window`` and ``stride`` (occlusion: 32 and 16 pixels).
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        An :class:`Attribution`: its ``.map`` is ``[N, 3, H, W]`` (``[N, 1, H, W]`` for
        Grad-CAM), on the model's device.

    Raises:
        ArgumentError: an unknown method or class, or a target the method cannot explain
            (Grad-CAM of a unit below its layer).

    Examples:
        >>> a = attribute(model, "photo.jpg", method="guided", target="tabby").map
        >>> cam = attribute(model, x, method="gradcam")   # the top-1 class, .map [N, 1, H, W]
    """
    if isinstance(features, (list, tuple)):
        if len(features) != 1:
            raise ArgumentError(f"attribute explains one unit at a time; got features "
                                f"{list(features)}")
        features = features[0]
    x, rgb, names = images_for(model, images)
    logits = None
    if layer is None:  # one forward pass serves the target's choice and the note's seed
        with torch.no_grad():
            logits = model(x)
    resolved = resolve_target(model, x, target, layer, features, mode, logits=logits)
    result = attribute_map(model, x, method, resolved=resolved, cam_layer=cam_layer,
                           **options)
    notes = map_check.notes_for(model, x, method, resolved, result, logits=logits)
    return Attribution.of(result, model=model, method=method, target=resolved, rgb=rgb,
                          images=names, notes=notes)


def attribute_map(model: nn.Module, x: Tensor, method: str, target: Union[None, int, str] = None,
                  layer: Optional[str] = None, feature: Optional[int] = None, mode: str = "max",
                  *, cam_layer: Optional[str] = None,
                  nets: Optional[Dict[str, Projector]] = None,
                  resolved: Optional[Target] = None, **options) -> Tensor:
    """:func:`attribute`'s map for analyses that already hold the batch ``x`` (normalised,
    on the model's device) and run inside a guarded call; ``nets`` are reverse-pass
    projectors of ``model`` to reuse, by method name, and ``resolved`` a :class:`Target`
    already resolved (skips a forward pass)."""
    entry = method_table.get(method)
    x = check_images(x, model=model)
    target = resolved or resolve_target(model, x, target, layer, feature, mode)
    nets = nets if nets is not None else {}

    def net_for(name: str) -> Projector:
        if name not in nets:  # one trace of the model for every method
            nets[name] = (next(iter(nets.values())).with_method(name) if nets
                          else Projector(model, method=name))
        return nets[name]

    wanted = "class" if target.is_class else "unit"
    if wanted not in entry.explains:
        raise ArgumentError(f"{entry.title} explains a {' or a '.join(entry.explains)}, not a "
                            f"{wanted}")
    if entry.is_reverse_pass:
        return _reverse(net_for(method), x, target)
    if method == "guided_gradcam":
        cam = attribute_map(model, x, "gradcam", cam_layer=cam_layer, nets=nets,
                            resolved=target)
        return _reverse(net_for("guided"), x, target) * cam
    return _captum(method, model, x, target, net_for("gradient"), cam_layer, options)


def _reverse(net: Projector, x: Tensor, target: Target,
             recording: Optional[Recording] = None) -> Tensor:
    """A reverse-pass method's map of ``target`` (``recording``: of ``x``, holding the
    output ``""`` and what the method reads; made here if not given)."""
    if not target.is_class:
        return net.project(x, target.layer, features=target.feature, mode=target.mode)
    rec = recording if recording is not None else net.record(x, "")
    seed = torch.zeros_like(rec.activations[""])
    rows = torch.arange(x.shape[0])
    seed[rows, target.classes] = 1.0  # 1 at the logit, as Captum seeds
    if net.method.relevance:  # LRP: the logit itself, which the relevance then conserves
        seed[rows, target.classes] = rec.activations[""][rows, target.classes]
    return net.project(x, "", signal=seed, recording=rec)


def _captum(method: str, model: nn.Module, x: Tensor, target: Target, net: Projector,
            cam_layer: Optional[str], options: dict) -> Tensor:
    from captum.attr import (
        IntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    if target.is_class:
        forward, captum_target, extra = model, target.classes, None
    else:
        node = net.layer(target.layer, tuple(x.shape[-2:])).node
        forward, captum_target = _UnitObjective(net, node), None
        extra = ((cam_seed if method == "gradcam" else _unit_seed)(net, x, target),)
    if method == "gradcam" and _features_last(net, cam_layer, x):
        return _cam(method, model, x, target, net, cam_layer, options)  # tokens: no Captum
    if method == "gradcam":
        name = cam_layer or default_cam_layer(net)
        cam = net.layer(name, tuple(x.shape[-2:]))
        if not target.is_class:
            unit = net.layer(target.layer, tuple(x.shape[-2:])).node
            below = {op.name for op in net.traced.path_to_input(net.traced.ops[unit].node)}
            if cam.node not in below:
                raise ArgumentError(f"Grad-CAM at {name!r} cannot explain a unit of "
                                    f"{target.layer!r}, which is not above it: n/a")
        module = model.get_submodule(cam.path.partition("@")[0]) if cam.path else model
        return grad_cam(forward, module, x, captum_target, tuple(x.shape[-2:]), extra)
    if method == "integrated_gradients":
        ig = IntegratedGradients(forward)
        return ig.attribute(x, baselines=torch.zeros_like(x), target=captum_target,
                            additional_forward_args=extra, n_steps=options.get("n_steps", 32),
                            internal_batch_size=options.get("batch_size", 16))
    if method == "smoothgrad":
        stdev = options.get("stdev", 0.15) * float(x.max() - x.min())
        tunnel = NoiseTunnel(Saliency(forward))
        return tunnel.attribute(x, nt_type="smoothgrad", nt_samples=options.get(
            "nt_samples", 16), nt_samples_batch_size=options.get("batch_size", 8),
            stdevs=stdev, target=captum_target, additional_forward_args=extra, abs=False)
    if method in cams.CAMS:
        return _cam(method, model, x, target, net, cam_layer, options)
    if method in attention_maps.ATTENTION_METHODS:
        return attention_maps.attention_map(model, x, method, list(target.classes),
                                            _patch_grid(net, x))
    if method != "occlusion":
        raise ArgumentError(f"method {method!r} is in the method table, but attribute() has "
                            f"no implementation of it; a reverse pass is added with "
                            f"deconvviz.engine.register_method")
    window, stride = options.get("window", 32), options.get("stride", 16)
    if window > min(x.shape[-2:]):
        raise ArgumentError(f"the occlusion window ({window} px) is larger than the image "
                            f"({x.shape[-2]}x{x.shape[-1]})")
    occlusion = Occlusion(forward)
    return occlusion.attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                               strides=(x.shape[1], stride, stride), baselines=0.0,
                               target=captum_target, additional_forward_args=extra,
                               perturbations_per_eval=options.get("batch_size", 16))


def cam_layers(net: Projector, cam_layer, size: Tuple[int, int]) -> List[Tuple]:
    """The CAM's layers, ``(module, graph node, reading)`` each: ``cam_layer`` (a name, a
    comma list or a list of names; default :func:`default_cam_layer`); each must be a
    module's output. ``reading`` reads a layer whose features are last channels first (a
    token layer on its patch grid, a channels-last map), ``None`` for the others."""
    layers = []
    for name in _cam_layer_names(net, cam_layer):
        layer = net.layer(name, size)
        path = layer.path.partition("@")[0]
        if not path:
            raise ArgumentError(f"a CAM's layer is a module's output; {name!r} is not one "
                                f"(`deconvviz layers` lists module paths)")
        node = net.traced.ops[layer.node].node.name
        reading = features_first(net.traced, [node], size=size).get(node)
        layers.append((net.model.get_submodule(path), node, reading))
    return layers


def _patch_grid(net: Projector, x: Tensor) -> Optional[Tuple[int, int, int]]:
    """``(named tokens, rows, columns)`` of the model's token layers, from its graph (the
    last token layer's), or ``None`` where it has none."""
    from ..engine.passes.recording import token_grids

    grids = list(token_grids(net.traced, size=tuple(x.shape[-2:])).values())
    return (len(grids[-1].prefix), *grids[-1].grid) if grids else None


def _features_last(net: Projector, cam_layer, x: Tensor) -> bool:
    """Whether a CAM layer's features are last (a token layer, a channels-last map): Captum's
    LayerGradCam reads channels first, so Grad-CAM there is the CAM family's."""
    return any(reading is not None for _, _, reading in
               cam_layers(net, cam_layer, tuple(x.shape[-2:])))


def _cam(method: str, model: nn.Module, x: Tensor, target: Target, net: Projector,
         cam_layer, options: dict) -> Tensor:
    """A member of the CAM family (:mod:`.cams`) of a class or a unit, ``[N, 1, H, W]`` in
    [0, 1]."""
    size = tuple(x.shape[-2:])
    layers = cam_layers(net, cam_layer, size) if method != "fullgrad" else []
    objective = None
    if not target.is_class:
        objective = unit_objective(net, x, target, list(zip(_cam_layer_names(net, cam_layer),
                                                            layers)))
    return cams.cam_maps(model, x, method, layers, list(target.classes or []),
                         traced_module=net.traced.graph_module,
                         eigen_smooth=bool(options.get("eigen_smooth", False)),
                         aug_smooth=bool(options.get("aug_smooth", False)),
                         batch_size=int(options.get("batch_size", 32)), objective=objective)


def _cam_layer_names(net: Projector, cam_layer) -> List[str]:
    if cam_layer is None:
        return [default_cam_layer(net)]
    if isinstance(cam_layer, str):
        return [n.strip() for n in cam_layer.split(",")]
    return list(cam_layer)


def grad_cam(forward, module: nn.Module, inputs, target, size: Tuple[int, int],
             extra: Optional[tuple] = None) -> Tensor:
    """Captum's ``LayerGradCam`` of ``module`` (rectified) in ``forward(*inputs, *extra)``,
    upsampled bilinearly to ``size``: ``[N, 1, H, W]``."""
    from captum.attr import LayerAttribution, LayerGradCam

    maps = LayerGradCam(forward, module).attribute(inputs, target=target,
                                                   additional_forward_args=extra,
                                                   relu_attributions=True)
    return LayerAttribution.interpolate(maps, size, "bilinear")


def probabilities(model: nn.Module, x: Tensor, classes: Sequence[int]) -> List[float]:
    """Softmax probability of each image's class."""
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    return [float(p[i, c]) for i, c in enumerate(classes)]

