"""The CAM family: class activation maps of one or several layers, weighted by gradients
(Grad-CAM and its variants), by the class score of masked inputs (Score-CAM), by the score
drop of ablated channels (Ablation-CAM), or by the activations' first principal component
(Eigen-CAM).

Conventions (the same for every member, and pytorch-grad-cam's, so that the maps can be
compared): the class score is the logit; a layer's map is rectified, scaled to [0, 1] per image
(``(m - min) / (max - min + 1e-7)``) and upsampled bilinearly (half-pixel centres, as
``cv2.resize``) to the input; several layers' maps are rectified, averaged and scaled again.
A layer is a module: its output is captured by a forward hook, *copied* before any later
in-place op can overwrite it (torchvision's DenseNet applies ``ReLU(inplace=True)`` to
``features.norm5``'s output: pytorch-grad-cam reads the overwritten values), and its gradient
is the gradient of the score with respect to that output.

Where deconvviz departs from pytorch-grad-cam, it follows the papers:

- Ablation-CAM (Desai & Ramaswamy 2020) ablates a channel by setting it to zero;
  pytorch-grad-cam sets it to ``min(activations) - 1e7`` whenever the layer's minimum is not
  0 (a layer before its ReLU). After a ReLU both give zero, and the same maps.
- FullGrad (Srinivas & Fleuret 2019) needs no layer: the input-gradient term and every
  biased convolution's and BatchNorm's bias-gradient term, as pytorch-grad-cam sums them.
- Eigen-CAM's principal component has no sign of its own; deconvviz orients it to correlate
  positively with the activations' mean over channels (pytorch-grad-cam keeps the SVD's sign,
  which may rectify the map away).

Speed: Score-CAM runs the model once per channel (its masked inputs differ everywhere), in
batches; Ablation-CAM runs only what lies above the layer, from the layer's recorded
activations and whatever else the rest of the model reads (a residual's other branch), not
the whole model for every batch of ablations.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..errors import ArgumentError
from .cam_objective import Objective

__all__ = ["CAMS", "GRADIENT_CAMS", "cam_maps", "scale", "projection", "ablation_tail",
           "Objective"]

# Weighted by the gradient of the class score at the layer.
GRADIENT_CAMS = ("gradcam", "hirescam", "gradcam_elementwise", "gradcam_plus_plus",
                 "xgradcam", "layercam", "eigengradcam")
CAMS = GRADIENT_CAMS + ("eigencam", "scorecam", "ablationcam", "fullgrad")
SCALE_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image


def scale(maps: Tensor, size: Tuple[int, int] = None) -> Tensor:
    """``[N, h, w]`` maps, each shifted to 0 and divided by its max (+1e-7), then resized
    bilinearly to ``size`` (``[N, H, W]``)."""
    flat = maps.flatten(1)
    maps = maps - flat.min(1).values[:, None, None]
    maps = maps / (SCALE_EPS + maps.flatten(1).max(1).values[:, None, None])
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear",
                             align_corners=False)[:, 0]
    return maps


def projection(maps: Tensor, orient: bool = True) -> Tensor:
    """The first principal component of each image's channels ``[N, K, h, w]`` -> ``[N, h,
    w]`` (centred over positions, as Eigen-CAM); oriented to correlate positively with the
    channels' mean (``orient``)."""
    out = []
    for a in maps.nan_to_num(0.0):
        flat = a.reshape(a.shape[0], -1).T.double()  # positions x channels
        flat = flat - flat.mean(0)
        _, _, vt = torch.linalg.svd(flat, full_matrices=False)
        proj = flat @ vt[0]
        if orient and float(proj @ flat.mean(1)) < 0:
            proj = -proj
        out.append(proj.reshape(a.shape[1:]).to(maps.dtype))
    return torch.stack(out)


@contextmanager
def _captured(modules: Sequence[nn.Module], reading=None
              ) -> Iterator[Dict[int, Dict[str, Tensor]]]:
    """Each module's output (a copy, safe from later in-place ops) and, after a backward
    pass, the gradient with respect to it, each read channels first by ``reading`` (a
    channels-last map's or a token layer's, from the graph; ``None``: as it is); the hooks
    are removed on every path."""
    found: Dict[int, Dict[str, Tensor]] = {}
    handles = []
    read = reading.features if reading is not None else (lambda t: t)

    def hook(index):
        def save(module, inputs, output):
            found[index] = {"activations": read(output.detach()).clone()}
            if output.requires_grad:
                output.register_hook(lambda g: found[index].__setitem__("gradients", read(g)))
        return save

    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_hook(hook(i)))
        yield found
    finally:
        for handle in handles:
            handle.remove()


def _weighted(method: str, a: Tensor, g: Tensor, eigen_smooth: bool) -> Tensor:
    """A gradient CAM's map of one layer before rectification: ``[N, h, w]``."""
    if method == "eigengradcam":
        return projection(g * a, orient=False)
    if method in ("hirescam", "gradcam_elementwise", "layercam"):
        terms = {"hirescam": g * a, "gradcam_elementwise": (g * a).clamp_min(0),
                 "layercam": g.clamp_min(0) * a}[method]
        return projection(terms, orient=False) if eigen_smooth else terms.sum(1)
    if method == "gradcam":
        weights = g.mean((2, 3))
    elif method == "gradcam_plus_plus":
        g2, g3 = g ** 2, g ** 3
        aij = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        weights = (g.clamp_min(0) * aij).sum((2, 3))
    elif method == "xgradcam":
        weights = (g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3))
    else:
        raise ArgumentError(f"unknown CAM {method!r}; choose from {', '.join(CAMS)}")
    return _combine(weights, a, eigen_smooth)


def _combine(weights: Tensor, a: Tensor, eigen_smooth: bool) -> Tensor:
    weighted = weights[:, :, None, None] * a
    return projection(weighted, orient=False) if eigen_smooth else weighted.sum(1)


def _score_cam(model, x: Tensor, a: Tensor, objective: Objective, batch_size: int) -> Tensor:
    """Score-CAM's weights ``[N, K]``: the softmax over channels of the class logit of the
    input masked by each channel's upsampled, min-max normalised map.

    A constant channel (a dead one, all zero) normalises to an all-zero mask, so its masked
    input is the same zero image for every such channel of every image: the model runs on it
    once, not once per channel (exact: the same input gives the same logit)."""
    up = F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.min(2).values[:, :, None, None], flat.max(2).values[:, :, None, None]
    masks = (up - lo) / (hi - lo + 1e-8)
    constant = (hi == lo).flatten(1)
    weights = []
    with torch.no_grad():
        blank = objective.value(torch.zeros_like(x[:1])) if constant.any() else None
        for i in range(x.shape[0]):
            live = (~constant[i]).nonzero().flatten()
            scores = torch.empty(masks.shape[1], dtype=x.dtype, device=x.device)
            if blank is not None:
                scores[constant[i]] = objective.pick(blank, i).to(x.dtype)
            for k0 in range(0, live.numel(), batch_size):
                k = live[k0:k0 + batch_size]
                scores[k] = objective.one(x[i:i + 1] * masks[i, k, None], i).to(x.dtype)
            weights.append(torch.softmax(scores, dim=0))
    return torch.stack(weights)


def ablation_tail(traced_module: fx.GraphModule, node_name: str, until: Optional[str] = None
                  ) -> Tuple[fx.GraphModule, List[fx.Node]]:
    """The part of the graph above ``node_name``: a module taking the values of its
    frontier (the layer's output first, then whatever else it reads from below, a residual's
    other branch), returning the model's output (or node ``until``'s value: a unit's layer)."""
    nodes = list(traced_module.graph.nodes)
    target = next(n for n in nodes if n.name == node_name)
    above, stack = set(), list(target.users)
    while stack:
        node = stack.pop()
        if node not in above and node.op != "output":
            above.add(node)
            stack.extend(node.users)
    end = next((n for n in nodes if n.name == until), None) if until else None
    if end is not None:
        needed, stack = set(), [end]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(node.all_input_nodes)
        above &= needed
    frontier = [target]
    for node in nodes:
        if node in above or (end is None and node.op == "output"):
            frontier += [a for a in node.all_input_nodes
                         if a not in above and a.op != "get_attr" and a not in frontier]
    graph = fx.Graph()
    env = {a: graph.placeholder(f"{a.name}_value") for a in frontier}
    for node in nodes:
        if node in above or node.op == "get_attr" or (end is None and node.op == "output"):
            env[node] = graph.node_copy(node, lambda n: env[n])
    if end is not None:
        graph.output(env[end])
    return fx.GraphModule(traced_module, graph), frontier


class _Recorder(fx.Interpreter):
    """Runs the graph once, keeping (copies of) the values of ``wanted`` nodes."""

    def __init__(self, module, wanted):
        super().__init__(module)
        self.wanted, self.values = set(wanted), {}

    def run_node(self, n):
        value = super().run_node(n)
        if n in self.wanted:
            self.values[n] = value.detach().clone() if isinstance(value, Tensor) else value
        return value


def _ablation_cam(traced_module: fx.GraphModule, node_name: str, x: Tensor,
                  objective: Objective, batch_size: int) -> Tuple[Tensor, Tensor]:
    """Ablation-CAM's activations and weights ``[N, K]``: ``(score - score with channel k at
    zero) / score``, each ablation run through the layers above only."""
    tail, frontier = ablation_tail(traced_module, node_name, objective.node)
    with torch.no_grad():
        end = [m for m in traced_module.graph.nodes if m.name == objective.node]
        recorder = _Recorder(traced_module, frontier + end)
        out = recorder.run(x)
        raw = recorder.values[end[0]] if end else out  # the logits, or the unit's layer
        values = [recorder.values[n] for n in frontier]
        a = values[0]
        n, k = a.shape[:2]
        original = torch.cat([objective.of_tail(raw[i:i + 1], i) for i in range(n)])
        weights = torch.empty(n, k, dtype=a.dtype, device=a.device)
        for i in range(n):
            for k0 in range(0, k, batch_size):
                ks = torch.arange(k0, min(k, k0 + batch_size), device=a.device)
                ablated = a[i:i + 1].repeat(len(ks), 1, 1, 1)
                ablated[torch.arange(len(ks)), ks] = 0.0
                rest = [v[i:i + 1].expand(len(ks), *v.shape[1:])
                        if isinstance(v, Tensor) and v.dim() and v.shape[0] == n else v
                        for v in values[1:]]
                scores = objective.of_tail(tail(ablated, *rest), i)
                weights[i, ks] = (original[i] - scores) / original[i]
    return a, weights


def _layer_map(model, traced_module, method: str, module: nn.Module, node: str, x: Tensor,
               objective: Objective, eigen_smooth: bool, batch_size: int,
               reading=None) -> Tensor:
    """One layer's CAM, before rectification: ``[N, h, w]``."""
    if method == "ablationcam":
        if reading is not None:
            raise ArgumentError("Ablation-CAM ablates the channels of a channels-first map; "
                                "this layer's features are last (tokens or a channels-last "
                                "map): choose another CAM or layer")
        a, weights = _ablation_cam(traced_module, node, x, objective, batch_size)
        return _combine(weights, a, eigen_smooth)
    with _captured([module], reading) as found:
        if method in GRADIENT_CAMS:
            with torch.enable_grad():
                inputs = x.detach().requires_grad_(True)
                objective.all(inputs).sum().backward(inputs=[inputs])
        else:
            with torch.no_grad():
                model(x)
    a = found[0]["activations"]
    if a.dim() != 4:
        raise ArgumentError(f"a CAM needs a layer with a spatial map; this one's output is "
                            f"{list(a.shape)}")
    if method == "eigencam":
        return projection(a)
    if method == "scorecam":
        return _combine(_score_cam(model, x, a, objective, batch_size), a, eigen_smooth)
    return _weighted(method, a, found[0]["gradients"], eigen_smooth)


def _bias_of(module: nn.Module) -> Tensor:
    """A convolution's bias, or a BatchNorm's as a bias (FullGrad's bias terms)."""
    if isinstance(module, nn.BatchNorm2d):
        return (module.bias - module.running_mean * module.weight
                / torch.sqrt(module.running_var + module.eps)).detach()
    return module.bias.detach()


def _per_channel(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """``[N, C, h, w]``, each channel scaled to [0, 1] and resized: ``[N, C, H, W]``."""
    n, c = maps.shape[:2]
    return scale(maps.reshape(n * c, *maps.shape[2:]), size).reshape(n, c, *size)


def _full_grad(model: nn.Module, x: Tensor, objective: Objective) -> Tensor:
    """FullGrad (Srinivas & Fleuret 2019): |input gradient x input| per colour channel, plus
    for every convolution and BatchNorm with a bias, |bias x the gradient at its output|,
    each channel scaled and upsampled, all summed: ``[N, H, W]`` before the final scaling."""
    modules = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d)
               and m.bias is not None]
    size = tuple(x.shape[-2:])
    with _captured(modules) as found, torch.enable_grad():
        inputs = x.detach().requires_grad_(True)
        g_x, = torch.autograd.grad(objective.all(inputs).sum(), inputs)
    total = _per_channel((g_x * x).abs(), size).sum(1)
    for i, module in enumerate(modules):
        if "gradients" in found.get(i, {}):
            g = found[i]["gradients"]
            total = total + _per_channel((_bias_of(module)[None, :, None, None] * g).abs(),
                                         size).sum(1)
    return total


def cam_maps(model: nn.Module, x: Tensor, method: str, layers: Sequence[Tuple[nn.Module, str]],
             classes: List[int], *, traced_module: fx.GraphModule = None,
             eigen_smooth: bool = False, aug_smooth: bool = False,
             batch_size: int = 32, objective: Optional[Objective] = None) -> Tensor:
    """``method``'s CAM of each image's class (or of ``objective``: a unit), fused over
    ``layers`` (``(module, graph node name)`` pairs, or ``(module, node, reading)`` for a
    layer whose features are last: a token layer's patch grid or a channels-last map, read
    channels first as the graph says, where pytorch-grad-cam asks its user for a
    ``reshape_transform``): ``[N, 1, H, W]`` in [0, 1].

    ``aug_smooth`` averages the maps of six augmented inputs (flipped or not, times 0.9, 1
    and 1.1), each flipped back; ``eigen_smooth`` takes the first principal component of the
    weighted activations instead of their sum."""
    if method not in CAMS:
        raise ArgumentError(f"unknown CAM {method!r}; choose from {', '.join(CAMS)}")
    objective = objective or Objective(model, classes)
    if aug_smooth:
        if objective.is_unit:
            raise ArgumentError("aug_smooth flips and rescales the image, which moves a "
                                "unit's position: it smooths a class's CAM only")
        maps = []
        for flip in (False, True):
            for factor in (0.9, 1.0, 1.1):
                moved = x.flip(-1) if flip else x
                made = cam_maps(model, moved * factor, method, layers, classes,
                                traced_module=traced_module, eigen_smooth=eigen_smooth,
                                batch_size=batch_size)
                maps.append(made.flip(-1) if flip else made)
        return torch.stack(maps).mean(0)
    size = tuple(x.shape[-2:])
    if method == "fullgrad":  # every biased layer: cam_layer plays no part
        if eigen_smooth:
            raise ArgumentError("FullGrad sums every layer's bias terms: it has no "
                                "eigen_smooth")
        return scale(_full_grad(model, x, objective))[:, None]
    per_layer = [scale(_layer_map(model, traced_module, method, layer[0], layer[1], x,
                                  objective, eigen_smooth, batch_size,
                                  layer[2] if len(layer) > 2 else None).clamp_min(0), size)
                 for layer in layers]
    fused = torch.stack(per_layer, 1).clamp_min(0).mean(1)
    return scale(fused)[:, None]
