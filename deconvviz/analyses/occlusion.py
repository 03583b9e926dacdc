"""Occlusion sensitivity, Zeiler & Fergus Fig. 7: what happens when part of the image is hidden.

A grey square (the preprocessing's mean colour: 0 in the normalised input) of ``size`` x
``size`` pixels is slid over the crop the model sees; position (i, j) puts its top-left corner
at (i * stride, j * stride), for every position where it lies fully inside the image. For each
position, a forward pass gives the summed activation of one feature map of a layer (panel b),
the probability of the target class (d) and the most probable class (e). Probabilities are
the softmax of the logits.

By default the passes are incremental (:mod:`deconvviz.engine.passes.incremental`): one forward
pass of the unoccluded image keeps every layer's activations, and for a batch of positions
each layer recomputes only the window of its output that the square can change. The results
equal plain forward passes of the occluded images (``incremental=False``) up to the
rounding of the convolutions (the tests hold them to 1e-5 of the largest value).
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..data.images import ImagesArg
from ..data.zoo import class_names, model_info, model_name
from ..engine import Deconvnet
from ..engine.guard import runs_model
from ..engine.passes.incremental import IncrementalForward
from ..engine.passes.recording import forward_to, images_for
from ..engine.passes.seeds import strongest
from ..errors import ArgumentError
from .attribution import default_cam_layer, resolve_target
from .result import Result

__all__ = ["OcclusionResult", "occlusion"]


@dataclass
class OcclusionResult(Result):
    """The outcome of :func:`occlusion`, per image ``n`` and occluder position ``(i, j)``.

    Attributes:
        activity: ``[N, I, J]`` summed activation of the chosen feature map.
        probability: ``[N, I, J]`` probability of the target class.
        label: ``[N, I, J]`` the most probable class.
        unoccluded_activity, unoccluded_probability, unoccluded_label: ``[N]`` the same
            without an occluder.
        layer: the layer; ``features``: the feature map per image; ``targets``: the class
            per image.
        projection: ``[N, 3, H, W]`` the deconvnet projection of each feature's strongest
            activation in the unoccluded image; ``boxes``: its receptive field per image,
            ``(top, left, height, width)`` in pixels.
        size, stride: the occluder's side and step in pixels.
        rgb: the crops the model saw; ``names``: the class names, where the model has them.
    """

    kind: ClassVar[str] = "occlusion"

    activity: np.ndarray
    probability: np.ndarray
    label: np.ndarray
    unoccluded_activity: np.ndarray
    unoccluded_probability: np.ndarray
    unoccluded_label: np.ndarray
    layer: str
    features: List[int]
    targets: List[int]
    projection: Tensor
    boxes: List[Tuple[int, int, int, int]]
    size: int
    stride: int
    rgb: List[np.ndarray]
    names: Optional[List[str]]
    model: str
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path

    def class_name(self, index: int) -> str:
        return self.names[index] if self.names else f"class {index}"

    def figure(self, *, fig=None):
        """The paper's five panels per image: (a) the image with an example occluder, (b) the
        activity map, (c) the projection with its receptive field, (d) the probability
        map, (e) the label map."""
        return figures.occlusion_figure(self, fig=fig)

    def _save_data(self, path: str, ext: str) -> str:
        return write_atomically(path, lambda f: np.savez_compressed(
            f, activity=self.activity, probability=self.probability, label=self.label,
            features=np.asarray(self.features), targets=np.asarray(self.targets),
            size=self.size, stride=self.stride, layer=self.layer))

    def __repr__(self) -> str:
        n, i, j = self.probability.shape
        return (f"OcclusionResult({self.model} {self.layer}, {n} image(s), {i}x{j} positions "
                f"of a {self.size}-px square every {self.stride} px)")


# On a GPU, the incremental passes pay where they compute less than this share of the plain
# passes' multiply-adds (IncrementalForward.cost). On one H200 at 48-px squares, stride 8,
# batch 256, float32: VGG16 (share 0.25) ran its windows at about 11 T multiply-adds/s (2.0 T
# in 0.187 s), ResNet-50 (share 0.56, many small layers) at about 4 T (1.2 T in 0.294 s); the
# plain passes beside them: benchmarks/README.md, the GPU's table 4.
GPU_INCREMENTAL_SHARE = 0.4
# model -> {(layer node, height, width, size, stride, batch, device): incremental or not},
# decided once (the decision's dry count and base pass cost ResNet-50 about 70 ms a call)
_CHOSEN: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, bool]]" = weakref.WeakKeyDictionary()


def _incremental_pays(cost: dict) -> bool:
    """On a GPU: whether the incremental passes compute little enough
    (:meth:`IncrementalForward.cost`)."""
    return cost["computed"] < GPU_INCREMENTAL_SHARE * cost["full"]


def _occluded(image: Tensor, chunk: List[Tuple[int, int]], size: int, stride: int) -> Tensor:
    """``image`` once per position of ``chunk``, each with its square set to zero (one
    masked product on the image's device, not one copy per position)."""
    at = torch.tensor(chunk, device=image.device) * stride  # [B, 2]: top, left
    rows = torch.arange(image.shape[-2], device=image.device)
    cols = torch.arange(image.shape[-1], device=image.device)
    inside_y = (rows >= at[:, :1]) & (rows < at[:, :1] + size)  # [B, H]
    inside_x = (cols >= at[:, 1:]) & (cols < at[:, 1:] + size)  # [B, W]
    square = inside_y[:, :, None] & inside_x[:, None, :]
    return image.unsqueeze(0).masked_fill(square.unsqueeze(1), 0)


def _incremental_plan(net: Deconvnet, model: nn.Module, x: Tensor, nodes: List[str],
                      incremental: Optional[bool], ys: List[int], xs: List[int], size: int,
                      stride: int, batch_size: int) -> Optional[IncrementalForward]:
    """The incremental passes with the first image as their base, or ``None`` for plain
    passes: as ``incremental`` says, else the device's choice (incremental on a CPU; on a GPU
    where they compute little enough), made once per model, layer, size and device."""
    if incremental is False or not _can_increment(model):
        return None
    chosen = _CHOSEN.setdefault(model, {})
    key = (nodes[0], *x.shape[-2:], size, stride, batch_size, str(x.device))
    if incremental is None and chosen.get(key) is False:
        return None
    plan = IncrementalForward(net.traced, nodes)
    plan.set_base(x[:1])
    if incremental is None and key not in chosen:
        chosen[key] = x.device.type == "cpu" or _incremental_pays(
            plan.cost(ys, xs, (size, size), batch_size))
    return plan if incremental or chosen[key] else None


def _can_increment(model: nn.Module) -> bool:
    """Whether the incremental passes can hold: no BatchNorm or dropout in training mode
    (their output would depend on the batch or on chance)."""
    active = [type(m).__name__ for m in model.modules() if m.training and isinstance(
        m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))]
    if active:
        warnings.warn(f"occlusion: {active[0]} is in training mode; running plain forward "
                      f"passes (call model.eval() for the incremental ones)", stacklevel=3)
    return not active


@api(renamed={"x": "images", "feature": "features"},
     legacy=("layer", "features", "target", "size", "stride", "batch_size", "progress"))
@runs_model
def occlusion(model: nn.Module, images: ImagesArg, *, layer: Optional[str] = None,
              features: Optional[int] = None, target: Union[None, int, str] = None,
              size: int = 48, stride: int = 8, batch_size: int = 64,
              progress: ProgressArg = False, incremental: Optional[bool] = None,
              device: Optional[str] = None,
              precision: Optional[str] = None) -> OcclusionResult:
    """Slide a grey square over each image and record a feature's activity, the target's
    probability and the predicted class (Zeiler & Fergus Fig. 7).

    Args:
        model: a classifier (logits ``[N, classes]``).
        images: photos in any form of the glossary (docs/api.md).
        layer: the layer whose feature map is summed (default: the top convolutional
            layer).
        features: the feature map (default, per image: the one with the strongest single
            activation in the unoccluded image).
        target: the class (default: each image's top-1 class).
        size: the square's side in pixels; stride: its step.
        batch_size: occluded images per forward pass.
        progress: ``True`` (a bar), ``False``, or ``progress(done, total, label)`` called
            after each batch, counting positions (over every image).
        incremental: ``True``: recompute only the window of each layer that the square can
            change (exact); ``False``: one plain forward pass per position; ``None``
            (default): the incremental passes on a CPU, and on a GPU where they compute
            less than :data:`GPU_INCREMENTAL_SHARE` of the plain passes' multiply-adds (the
            GPU runs the plain passes' large convolutions at a higher rate).
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        An :class:`OcclusionResult`.
    """
    x, rgb, _ = images_for(model, images)
    n, _, height, width = x.shape
    if not (isinstance(size, int) and isinstance(stride, int) and size > 0 and stride > 0):
        raise ArgumentError(f"size and stride are positive pixel counts, got {size}, {stride}")
    if size > min(height, width):
        raise ArgumentError(f"the occluder ({size} px) is larger than the image "
                            f"({height}x{width})")
    net = Deconvnet(model)
    layer = layer or default_cam_layer(net)
    node = net.layer(layer, (height, width)).node
    output = net.layer("", (height, width)).node
    run = forward_to(net.traced, [node, output], (height, width))
    with torch.no_grad():
        act, logits = run(x)
    resolved = resolve_target(model, x, target, logits=logits)
    chosen = _features_of(act, features, layer)
    rows, cols = (height - size) // stride + 1, (width - size) // stride + 1
    positions = [(i, j) for i in range(rows) for j in range(cols)]
    ys, xs = [i * stride for i, _ in positions], [j * stride for _, j in positions]
    plan = _incremental_plan(net, model, x, [node, output], incremental, ys, xs, size, stride,
                             batch_size)
    if plan is None:
        batches = [positions[k:k + batch_size] for k in range(0, len(positions), batch_size)]
    else:  # the batches of positions whose windows have the same sizes
        batches = [[positions[k] for k in chunk]
                   for chunk in plan.batches(ys, xs, (size, size), batch_size)]
    bar = progress_bar(progress, total=n * len(positions), desc="occlusion", unit="position",
                       where="occlusion", legacy=_counting)
    with bar:
        maps = _sweep(x, (node, output), run, plan, batches, (rows, cols), size, stride, chosen,
                      resolved.classes, bar)
    return _result(model, net, x, rgb, layer, act, logits, chosen, resolved.classes, maps,
                   size, stride)


def _counting(old):
    """The old ``progress(positions_in_this_batch)`` callback in the new shape."""
    last = [0]

    def report(done: int, total, label: str) -> None:
        old(done - last[0])
        last[0] = done

    return report


def _features_of(act: Tensor, feature: Optional[int], layer: str) -> List[int]:
    """Each image's feature: the one given, else its strongest in the unoccluded image."""
    n, channels = act.shape[:2]
    if isinstance(feature, (list, tuple)) and len(feature) == 1:
        feature = feature[0]
    if feature is None:
        return act.reshape(n, channels, -1).amax(dim=2).argmax(dim=1).tolist()
    if not 0 <= int(feature) < channels:
        raise ArgumentError(f"feature {feature} is out of range for layer {layer!r}: valid "
                            f"features are 0 to {channels - 1}")
    return [int(feature)] * n


def _sweep(x, nodes, run, plan, batches, grid, size, stride, features, classes, bar):
    """Every image's occluded positions, batch by batch: the feature's summed activity, the
    class's probability and the predicted class, each ``[N, rows, cols]``."""
    node, output = nodes
    n = x.shape[0]
    activity, probability = np.zeros((n, *grid)), np.zeros((n, *grid))
    label = np.zeros((n, *grid), dtype=np.int64)
    for image in range(n):
        f, c = features[image], classes[image]
        if plan is not None and image > 0:  # the first image's is set
            plan.set_base(x[image:image + 1])
        for chunk in batches:
            with torch.no_grad():
                if plan is not None:
                    patch = x.new_zeros(len(chunk), x.shape[1], size, size)
                    got = plan.run(patch, [i * stride for i, _ in chunk],
                                   [j * stride for _, j in chunk], channels={node: f})
                    fmap, out = got[node], got[output]
                else:
                    a, out = run(_occluded(x[image], chunk, size, stride))
                    fmap = a[:, f]
            p = F.softmax(out, dim=1)
            rows_, cols_ = np.array(chunk).T
            activity[image, rows_, cols_] = fmap.reshape(len(chunk), -1).sum(dim=1)\
                .double().cpu().numpy()
            # one copy per batch, not per position
            probability[image, rows_, cols_] = p[:, c].double().cpu().numpy()
            label[image, rows_, cols_] = p.argmax(dim=1).cpu().numpy()
            bar.update(len(chunk))
    return activity, probability, label


def _result(model, net, x, rgb, layer, act, logits, features, classes, maps, size, stride
            ) -> OcclusionResult:
    """The sweep's maps with the unoccluded values, each feature's projection and its
    strongest activation's receptive field."""
    n, channels = act.shape[:2]
    height, width = x.shape[-2:]
    p0 = F.softmax(logits, dim=1)
    unoccluded = act.reshape(n, channels, -1)
    projection = torch.stack([net.project(x[i:i + 1], layer, features=features[i])[0]
                              for i in range(n)]).detach().cpu()
    geometry = net.layer(layer, (height, width)).geometry
    boxes = []
    for i in range(n):
        _, ys, xs = strongest(act[i:i + 1], [features[i]])
        boxes.append(geometry.window(int(ys[0, 0]), int(xs[0, 0])) if geometry is not None
                     else (0, 0, height, width))
    info = model_info(model)
    return OcclusionResult(
        *maps,
        np.array([float(unoccluded[i, features[i]].sum()) for i in range(n)]),
        np.array([float(p0[i, classes[i]]) for i in range(n)]),
        p0.argmax(dim=1).cpu().numpy(), layer, features, classes, projection, boxes,
        size, stride, rgb, class_names(model), model_name(model),
        weights=info.weights if info else "user")
