"""Feature visualisation by optimisation: the image each unit *wants* (Olah et al., "Feature
Visualization", Distill 2017; Lucid's defaults).

:func:`feature_vis` optimises one image per unit (or ``images_per_unit``), all units of a
call together in one batch, chunked to fit ``max_memory``. Each step renders the images from
their parametrisation (:mod:`.fv_image`: Fourier with 1/f scaling and decorrelated colour by
default), transforms each at random (pad, jitter, scale, rotate, jitter), normalises them as
the model expects, runs the model up to the layer and takes an Adam step on the objective:

- ``channel``: the mean of the unit's map;
- ``neuron``: the unit's activation at one position (default: the map's centre);
- ``direction``: the mean over positions of the activation vector's dot product with a
  direction in channel space (one image per direction);
- ``logit``: a class's output (``layer`` is then the model's output);
- ``negative=True`` minimises instead of maximising, for any of them;
- a layer that is a ReLU's output is optimised before its ReLU (``pre_relu=True``, as Lucid's
  ``_pre_relu`` layers): a unit at zero has no gradient, and from a grey start most of a
  deep layer's units are at zero;
- ``diversity``: the weight of Lucid's Gram-matrix penalty between the images of one unit
  (with ``images_per_unit`` > 1): the cosine similarity of their layer activations' Gram
  matrices, summed over pairs, so that they show different facets of the unit.

The model is run through a graph copy of its forward pass up to the layer
(:func:`~deconvviz.engine.passes.recording.forward_to`): nothing is attached to it, and only the
images' gradients are computed (the weights' ``.grad`` stay untouched). The same seed, device
and thread count give the same images; each image's start and random transforms come from
its own seeded stream, so a unit's image does not depend on which others share its batch
(up to the floating point of batched kernels).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from ..choices import FV_OBJECTIVES, weights_label
from ..data.devices import model_device, model_dtype
from ..data.images import preprocessing_for
from ..data.zoo import Preprocessing, class_names, model_info, model_name
from ..engine.passes.plan import memory_budget
from ..engine.passes.recording import forward_to
from ..engine.projector import Projector
from ..errors import ArgumentError
from .fv_image import LUCID_TRANSFORMS, ImageParam, Transforms, draw_transforms, transform_batch
from .result import Result

__all__ = ["OBJECTIVES", "FeatureVisResult", "feature_vis"]

OBJECTIVES = FV_OBJECTIVES


@dataclass
class FeatureVisResult(Result):
    """The optimised images of :func:`feature_vis`.

    Attributes:
        images: ``[units, images_per_unit, 3, S, S]`` in ``[0, 1]`` (CPU), at the optimised
            image's own resolution.
        values: ``[units, images_per_unit]``: the objective on each final image, resized to
            the model's input without random transforms (negated for ``negative``).
        units: the unit (feature, class or direction index) of each row.
        labels: the rows' names.
        model: the model's zoo name (its class name outside the zoo).
        weights: what it ran with (as in :func:`weights_label`).
        layer: the layer (``"logits"`` for the logit objective).
        objective: one of :data:`OBJECTIVES`; negative: minimised instead.
        param: the parametrisation; decorrelate: colours decorrelated.
        transforms: the random transforms (``None``: none).
        steps: Adam's steps; lr: its learning rate; seed: the seed.
        diversity: the Gram penalty's weight; input_size: the side the model saw.
        seconds: the time taken; position: the neuron's ``(y, x)`` (``neuron`` only).
        pre_relu: the layer's ReLU was left out (its input optimised).
    """

    kind: ClassVar[str] = "feature_vis"

    images: Tensor
    values: Tensor
    units: List[int]
    labels: List[str]
    model: str
    weights: str
    layer: str
    objective: str
    negative: bool
    param: str
    decorrelate: bool
    transforms: Optional[Transforms]
    steps: int
    lr: float
    seed: int
    diversity: float
    input_size: int
    seconds: float = 0.0
    position: Optional[tuple] = field(default=None)
    pre_relu: bool = False

    def settings(self) -> str:
        """One line: weights, layer, objective, parametrisation, transforms and steps."""
        what = ("negative " if self.negative else "") + self.objective + " objective"
        if self.objective == "neuron" and self.position is not None:
            what += f" at (y {self.position[0]}, x {self.position[1]})"
        param = self.param + (", decorrelated colour" if self.decorrelate else "")
        size = self.images.shape[-1]
        robust = f"transforms ({self.transforms.describe()})" if self.transforms else \
            "no transforms"
        extra = f", diversity {self.diversity:g}" if self.diversity else ""
        layer = self.layer + (" (before its ReLU)" if self.pre_relu else "")
        return (f"{self.model} ({weights_label(self.weights)}) {layer}: {what}"
                f"{extra}; {param} {size} px -> {self.input_size} px; {robust}; "
                f"{self.steps} steps Adam {self.lr:g}, seed {self.seed}")

    def image(self, row: int, index: int = 0) -> np.ndarray:
        """Row ``row``'s image ``index`` as ``H x W x 3`` uint8."""
        return _uint8(self.images[row, index])

    def row_of(self, unit: int) -> int:
        """The row of ``unit`` (a feature, class or direction index)."""
        if unit not in self.units:
            raise ArgumentError(f"unit {unit} was not optimised; this result holds "
                                f"{_ranges(self.units)}")
        return self.units.index(unit)

    def figure(self, *, ncols: Optional[int] = None, values: bool = True):
        """A grid: one tile per image, titled with its unit (and objective value), under a
        title naming the weights, objective, parametrisation and steps."""
        tiles = [[self.image(r, i) for i in range(self.images.shape[1])]
                 for r in range(len(self.units))]
        notes = [[f"{float(v):.3g}" for v in row] for row in self.values] if values else None
        return figures.feature_vis_grid(tiles, self.labels, self.settings(), notes=notes,
                                        ncols=ncols)

    def _save_data(self, path: str, ext: str) -> str:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=self.images.numpy(), values=self.values.numpy(),
                            units=np.asarray(self.units), labels=np.asarray(self.labels),
                            settings=np.asarray(self.settings()))
        data = buffer.getvalue()
        return write_atomically(path, lambda f: f.write(data))

    def __repr__(self) -> str:
        return (f"FeatureVisResult({len(self.units)} units x {self.images.shape[1]} images; "
                f"{self.settings()})")


def _uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _ranges(units: Sequence[int]) -> str:
    return ", ".join(str(u) for u in units[:8]) + (" ..." if len(units) > 8 else "")


def _check_eval(model: nn.Module) -> None:
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd

    moving = [type(m).__name__ for m in model.modules()
              if m.training and isinstance(m, (_BatchNorm, _DropoutNd))]
    if moving:
        raise ArgumentError(f"the model is in training mode ({moving[0]} would change every "
                            f"step and tie the images of a batch together); call model.eval()")


class _Objective:
    """Each image's objective value from the layer's activations (before ``negative``)."""

    def __init__(self, objective: str, units: Tensor, position=None, directions=None):
        self.objective, self.units = objective, units
        self.position, self.directions = position, directions

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        b = torch.arange(act.shape[0], device=act.device)
        if self.objective == "direction":
            d = self.directions[rows].to(act.dtype)
            prod = act * d.reshape(d.shape + (1,) * (act.dim() - 2))
            return prod.sum(1).flatten(1).mean(1) if act.dim() > 2 else prod.sum(1)
        unit_act = act[b, self.units[rows]]
        if unit_act.dim() == 1:  # a linear layer's output, or the logits
            return unit_act
        if self.objective == "neuron":
            return unit_act[:, self.position[0], self.position[1]]
        return unit_act.flatten(1).mean(1)


def _gram_penalty(act: Tensor, group: int) -> Tensor:
    """Lucid's diversity: within each group of ``group`` images, the summed cosine similarity
    of every other image's Gram matrix (channels x channels), over ``group``."""
    if group < 2:
        return act.new_zeros(())
    flat = act.flatten(2)  # [B, C, positions]
    grams = flat @ flat.transpose(1, 2)
    grams = grams.flatten(1)
    grams = grams / grams.norm(dim=1, keepdim=True).clamp_min(1e-10)
    grams = grams.reshape(-1, group, grams.shape[1])
    sim = grams @ grams.transpose(1, 2)  # [units, group, group]
    off = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return off.sum() / group


def _saved_bytes(run: Callable[[], Tensor], model: nn.Module) -> int:
    """Bytes autograd keeps for the backward pass of ``run()`` (a probe on one image),
    without the model's weights (kept once, whatever the batch)."""
    weights = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    seen, total = set(), [0]

    def pack(t: Tensor):
        key = (t.data_ptr(), t.numel())
        if key not in seen and t.data_ptr() not in weights:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run().sum()
    return total[0]


def feature_vis(model: nn.Module, layer: Optional[str] = None,
                units: Union[None, int, Sequence[Union[int, str]]] = None, *,
                objective: str = "channel", negative: bool = False,
                position: Optional[Sequence[int]] = None, directions: Optional[Tensor] = None,
                diversity: float = 0.0, images_per_unit: int = 1, param: str = "fourier",
                decorrelate: bool = True, transforms: Optional[Transforms] = LUCID_TRANSFORMS,
                pre_relu: bool = True,
                steps: int = 512, lr: float = 0.05, image_size: int = 128,
                input_size: Optional[int] = None, seed: int = 0,
                preprocessing: Optional[Preprocessing] = None, max_memory: Optional[int] = None,
                net: Optional[Projector] = None,
                progress: Optional[Callable[[int, int], None]] = None) -> FeatureVisResult:
    """Optimise an image for each of ``units`` of ``layer``.

    Args:
        model: the network in eval mode (a zoo model or any traceable CNN); never changed.
        layer: an alias or module path (``"conv5"``); ``None`` with ``objective="logit"``.
        units: features (channel indices; default all), class indices or ImageNet names for
            ``logit``; ignored for ``direction`` (one image per row of ``directions``).
        objective: one of :data:`OBJECTIVES` (see the module docstring).
        negative: minimise the objective instead.
        position: ``(y, x)`` of a ``neuron`` in the layer's map (default its centre).
        directions: ``[K, channels]`` for ``direction``.
        diversity: the weight of the Gram-matrix penalty between a unit's images.
        images_per_unit: images optimised per unit (use > 1 with ``diversity``).
        param: ``"fourier"`` (1/f-scaled spectrum) or ``"pixel"``.
        decorrelate: map colours through ImageNet's colour correlation.
        transforms: the random transforms of each step (:data:`LUCID_TRANSFORMS`), or ``None``.
        pre_relu: where ``layer`` is a ReLU's output, optimise its input instead (a unit at
            zero has no gradient to follow).
        steps: Adam's steps (Lucid: 512).
        lr: Adam's learning rate (Lucid: 0.05).
        image_size: the optimised image's side (Lucid: 128), resized to ``input_size``.
        input_size: the side the model sees (default: its preprocessing's crop size).
        seed: the seed of every image's start and random transforms.
        preprocessing: the normalisation (default: the model's; ImageNet's for others).
        max_memory: bytes of autograd state one batch may use; larger requests are chunked
            (default: 1 GiB on a CPU, a quarter of the free memory on a GPU).
        net: a :class:`Projector` of ``model`` to reuse (its trace and layer names).
        progress: called with ``(steps done, steps in all)`` over all chunks.

    Returns:
        A :class:`FeatureVisResult` (``.figure()``, ``.save("grid.png")``).

    Examples:
        >>> result = feature_vis(load_model("zfnet"), "conv5", range(16), steps=256)
        >>> result.save("conv5.png")
    """
    if objective not in OBJECTIVES:
        raise ArgumentError(f"unknown objective {objective!r}; choose from "
                            f"{', '.join(OBJECTIVES)}")
    for name, value in (("steps", steps), ("images_per_unit", images_per_unit),
                        ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0 or diversity < 0:
        raise ArgumentError(f"lr must be > 0 and diversity >= 0, got {lr}, {diversity}")
    if transforms is not None and not isinstance(transforms, Transforms):
        raise ArgumentError("transforms must be a Transforms (e.g. LUCID_TRANSFORMS) or None")
    _check_eval(model)
    net = net if net is not None else Projector(model)
    prep = preprocessing or preprocessing_for(model)
    size = int(input_size or prep.crop_size)
    if objective == "logit":
        if layer is not None:
            raise ArgumentError("a logit objective reads the model's output: leave layer out")
        if diversity:
            raise ArgumentError("diversity compares feature maps: give it with a layer's "
                                "objective, not a logit")
        found, layer_name = net.layer("", (size, size)), "logits"
    else:
        if layer is None:
            raise ArgumentError(f"give a layer for the {objective} objective (an alias or a "
                                f"module path; `deconvviz layers` lists them)")
        found, layer_name = net.layer(layer, (size, size)), layer
    node, skipped = found.node, False
    op = net.traced.ops[node]
    if pre_relu and op.kind == "relu" and len(op.inputs) == 1 and op.inputs[0].name in \
            net.traced.ops:
        node, skipped = op.inputs[0].name, True
    run = forward_to(net.traced, [node])
    device, dtype = model_device(model), model_dtype(model) or torch.float32
    shape = (1,) + tuple(found.shape)  # measured once per size by the projector
    channels = shape[1]
    unit_list, labels = _units(model, objective, units, directions, channels, layer_name)
    if objective == "neuron":
        if len(shape) != 4:
            raise ArgumentError(f"{layer_name} has no spatial map (shape {list(shape)}): use "
                                f"the channel objective")
        position = tuple(position) if position is not None else (shape[2] // 2, shape[3] // 2)
        if not (len(position) == 2 and 0 <= position[0] < shape[2]
                and 0 <= position[1] < shape[3]):
            raise ArgumentError(f"position {position} is outside {layer_name}'s "
                                f"{shape[2]}x{shape[3]} map")
    else:
        position = None
    if objective == "direction":
        directions = torch.as_tensor(directions).to(device=device, dtype=dtype)
    mean = torch.tensor(prep.mean, device=device, dtype=dtype).reshape(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device, dtype=dtype).reshape(1, 3, 1, 1)
    score = _Objective(objective, torch.tensor(unit_list, device=device), position, directions)
    sign = -1.0 if negative else 1.0
    group = images_per_unit
    count = len(unit_list) * group

    def forward(rgb: Tensor, draws: Optional[Tensor]) -> Tensor:
        return run((transform_batch(rgb, size, transforms, draws) - mean) / std)[0]

    chunk = count
    if count > group:  # measured on one image: what autograd keeps, twice (the gradients)
        probe = ImageParam([0], image_size, param=param, decorrelate=decorrelate, seed=seed,
                           device=device, dtype=dtype)
        probe_draws = draw_transforms([0], 1, transforms, seed)[0] if transforms else None
        per_image = 2 * _saved_bytes(lambda: forward(probe.rgb(), probe_draws), model) + 1
        budget = max_memory if max_memory is not None else (
            memory_budget(None, device) if device.type == "cuda" else 2**30)
        chunk = max(group, min(count, budget // per_image) // group * group)
    images, values = [], []
    start, done, total = time.perf_counter(), 0, steps * count
    for first in range(0, count, chunk):
        indices = list(range(first, min(count, first + chunk)))
        rows = torch.tensor([i // group for i in indices], device=device)
        # each image's random stream is its unit's (and its place among the unit's images)
        streams = [unit_list[i // group] * group + i % group for i in indices]
        img = ImageParam(streams, image_size, param=param, decorrelate=decorrelate, seed=seed,
                         device=device, dtype=dtype)
        draws = draw_transforms(streams, steps, transforms, seed) if transforms else None
        optimiser = torch.optim.Adam([img.params], lr=lr)
        for step in range(steps):
            act = forward(img.rgb(), draws[step] if draws is not None else None)
            loss = -sign * score(act, rows).sum()
            if diversity:
                loss = loss + diversity * _gram_penalty(act, group)
            img.params.grad, = torch.autograd.grad(loss, [img.params])
            optimiser.step()
            done += len(indices)
            if progress is not None:
                progress(done, total)
        with torch.no_grad():
            rgb = img.rgb()
            values.append(sign * score(forward(rgb, None), rows))
            images.append(rgb.float().cpu())
    info = model_info(model)
    return FeatureVisResult(
        images=torch.cat(images).reshape(len(unit_list), group, 3, image_size, image_size),
        values=torch.cat(values).float().cpu().reshape(len(unit_list), group),
        units=unit_list, labels=labels, model=model_name(model),
        weights=info.weights if info else "user", layer=layer_name, objective=objective,
        negative=bool(negative), param=param, decorrelate=bool(decorrelate),
        transforms=transforms, steps=steps, lr=float(lr), seed=int(seed),
        diversity=float(diversity), input_size=size, seconds=time.perf_counter() - start,
        position=position, pre_relu=skipped)


def _units(model, objective, units, directions, channels, layer_name):
    """The unit indices and their labels; raises naming the valid range."""
    if objective == "direction":
        if directions is None:
            raise ArgumentError("the direction objective needs directions=[K, channels]")
        d = torch.as_tensor(directions)
        if d.dim() == 1:
            d = d[None]
        if d.dim() != 2 or d.shape[1] != channels:
            raise ArgumentError(f"directions must be [K, {channels}] for {layer_name}, got "
                                f"{list(d.shape)}")
        return list(range(d.shape[0])), [f"direction {i}" for i in range(d.shape[0])]
    if units is None:
        units = range(channels)
    elif isinstance(units, (int, str)):
        units = [units]
    names = class_names(model) if objective == "logit" else None
    out = []
    for unit in units:
        if objective == "logit" and isinstance(unit, str) and not unit.strip().isdigit():
            from .attribution import _class_index

            unit = _class_index(unit, names, channels)
        unit = int(unit)
        if not 0 <= unit < channels:
            what = "class" if objective == "logit" else "feature"
            raise ArgumentError(f"{what} {unit} is out of range for {layer_name}: valid are "
                                f"0 to {channels - 1}")
        out.append(unit)
    if not out:
        raise ArgumentError("no units to visualise")
    if objective == "logit":
        return out, [names[u] if names else f"class {u}" for u in out]
    return out, [f"unit {u}" for u in out]
