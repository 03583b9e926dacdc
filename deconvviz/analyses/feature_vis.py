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
from typing import ClassVar, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import (
    FV_OBJECTIVES,
    check_feature_vis_options,
    weights_label,
    where_computed,
)
from ..data.devices import model_device
from ..data.images import preprocessing_for
from ..data.zoo import Preprocessing, model_info, model_name
from ..engine.guard import runs_model
from ..engine.passes.plan import memory_budget
from ..engine.passes.recording import forward_to
from ..engine.precision import current_precision
from ..engine.projector import Projector
from ..errors import ArgumentError
from .fv_image import LUCID_TRANSFORMS, ImageParam, Transforms, draw_transforms, transform_batch
from .fv_objective import Objective, gram_penalty, saved_bytes, step_gradient, units_of
from .result import Result

__all__ = ["OBJECTIVES", "FeatureVisResult", "feature_vis"]

OBJECTIVES = FV_OBJECTIVES


@dataclass
class FeatureVisResult(Result):
    """The optimised images of :func:`feature_vis`.

    Attributes:
        images: ``[units, images_per_unit, 3, S, S]`` in ``[0, 1]`` (CPU), at the optimised
            image's own resolution.
        values: ``[units, images_per_unit]``: the unit's activation (the objective before
            ``negative`` negates it: a minimised unit's value is its own, negative) on each
            final image, resized to the model's input without random transforms.
        reached: ``[units, images_per_unit]`` bool: a gradient of the objective reached
            the image at some step (``False``: the unit does not depend on the image, e.g.
            a zero filter, and its image is its start).
        fired: ``[units, images_per_unit]`` bool where the layer's ReLU was left out
            (``pre_relu``) and the objective maximised: the unit's ReLU output is > 0
            somewhere on its final image (a direction: a unit it weighs); else ``None``.
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
        precision, device: how and where it was computed (``"exact"`` or ``"tf32"``;
            ``"cpu"``, ``"cuda"``...); the title names them off the CPU.
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
    precision: Optional[str] = None
    device: Optional[str] = None
    reached: Optional[Tensor] = None
    fired: Optional[Tensor] = None

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
        where = where_computed(self.device, self.precision)
        return (f"{self.model} ({weights_label(self.weights)}) {layer}: {what}"
                f"{extra}; {param} {size} px -> {self.input_size} px; {robust}; "
                f"{self.steps} steps Adam {self.lr:g}, seed {self.seed}"
                + (f"; {where}" if where else "") + f"; values: {self.value_name()}")

    def value_name(self) -> str:
        """What :attr:`values` are, for titles and tables."""
        if self.objective == "logit":
            what = "the class's logit"
        elif self.objective == "direction":
            what = "the activation along the direction"
        else:
            what = "the unit's activation" + (" (mean of its map)"
                                              if self.objective == "channel" else "")
        return what + (", minimised" if self.negative else "")

    def notes(self, values: bool = True) -> List[List[str]]:
        """Each tile's note: its value (with ``values``), or why there is none ("no gradient
        reached the image", "never fired")."""
        out = []
        for r, row in enumerate(self.values):
            out.append([])
            for i, v in enumerate(row):
                if self.reached is not None and not bool(self.reached[r, i]):
                    out[-1].append("no gradient reached the image")
                elif self.fired is not None and not bool(self.fired[r, i]):
                    out[-1].append("never fired")
                else:
                    out[-1].append(f"{float(v):.3g}" if values else "")
        return out

    def image(self, feature: int, index: int = 0) -> np.ndarray:
        """Feature ``feature``'s image ``index`` (of ``images_per_unit``) as ``H x W x 3``
        uint8: the unit's own number (a channel, class or direction index), whatever its row.

        Raises:
            ArgumentError: a unit this result does not hold, or an ``index`` past its images.
        """
        row = self.row_of(feature)
        if not 0 <= index < self.images.shape[1]:
            raise ArgumentError(f"image {index} of unit {feature}: this result holds "
                                f"{self.images.shape[1]} per unit (0 to "
                                f"{self.images.shape[1] - 1})")
        return _uint8(self.images[row, index])

    def row_of(self, feature: int) -> int:
        """The row of ``feature`` (a feature, class or direction index)."""
        if feature not in self.units:
            raise ArgumentError(f"unit {feature} was not optimised; this result holds "
                                f"{_ranges(self.units)}")
        return self.units.index(feature)

    def figure(self, *, ncols: Optional[int] = None, values: bool = True):
        """A grid: one tile per image, titled with its unit and value (the unit's
        activation; ``values=False`` leaves it out), or with why it has none ("no gradient
        reached the image", "never fired"), under a title naming the weights, objective,
        parametrisation, steps and what the values are."""
        tiles = [[_uint8(self.images[r, i]) for i in range(self.images.shape[1])]
                 for r in range(len(self.units))]
        notes = self.notes(values)
        return figures.feature_vis_grid(tiles, self.labels, self.settings(), notes=notes,
                                        ncols=ncols)

    def _save_data(self, path: str, ext: str) -> str:
        import io

        buffer = io.BytesIO()
        flags = {name: getattr(self, name).numpy() for name in ("reached", "fired")
                 if getattr(self, name) is not None}
        np.savez_compressed(buffer, images=self.images.numpy(), values=self.values.numpy(),
                            units=np.asarray(self.units), labels=np.asarray(self.labels),
                            settings=np.asarray(self.settings()),
                            value_name=np.asarray(self.value_name()), **flags)
        data = buffer.getvalue()
        return write_atomically(path, lambda f: f.write(data))

    def __repr__(self) -> str:
        return (f"FeatureVisResult({len(self.units)} units x {self.images.shape[1]} images; "
                f"{self.settings()})")


def _uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _ranges(units: Sequence[int]) -> str:
    return ", ".join(str(u) for u in units[:8]) + (" ..." if len(units) > 8 else "")


@api(renamed={"units": "features"}, legacy=("features",))
@runs_model
def feature_vis(model: nn.Module, layer: Optional[str] = None, *,
                features: Union[None, int, Sequence[Union[int, str]]] = None,
                objective: str = "channel", negative: bool = False,
                position: Optional[Sequence[int]] = None, directions: Optional[Tensor] = None,
                diversity: float = 0.0, images_per_unit: int = 1, param: str = "fourier",
                decorrelate: bool = True, transforms: Optional[Transforms] = LUCID_TRANSFORMS,
                pre_relu: bool = True, steps: int = 512, lr: float = 0.05,
                image_size: int = 128, input_size: Optional[int] = None, seed: int = 0,
                preprocessing: Optional[Preprocessing] = None, max_memory: Optional[int] = None,
                net: Optional[Projector] = None, progress: ProgressArg = False,
                device: Optional[str] = None,
                precision: Optional[str] = None) -> FeatureVisResult:
    """Optimise an image for each of ``features`` of ``layer``.

    Args:
        model: the network in eval mode (a zoo model or any traceable CNN); never changed.
        layer: an alias or module path (``"conv5"``); ``None`` with ``objective="logit"``.
        features: channel indices of ``layer`` (default all); for ``logit``, class indices
            or ImageNet names; ignored for ``direction`` (one image per row of
            ``directions``).
        objective: one of :data:`OBJECTIVES` (see the module docstring).
        negative: minimise the objective instead.
        position: ``(y, x)`` of a ``neuron`` in the layer's map (default its centre).
        directions: ``[K, channels]`` for ``direction``.
        diversity: the weight of the Gram-matrix penalty between a unit's images.
        images_per_unit: images optimised per unit (use > 1 with ``diversity``).
        param: ``"fourier"`` (1/f-scaled spectrum) or ``"pixel"``.
        decorrelate: map colours through ImageNet's colour correlation.
        transforms: the random transforms of each step (:data:`LUCID_TRANSFORMS`), or ``None``.
        pre_relu: where ``layer`` is a ReLU's output, optimise its input (a unit at zero
            has no gradient).
        steps: Adam's steps (Lucid: 512).
        lr: Adam's learning rate (Lucid: 0.05).
        image_size: the optimised image's side (Lucid: 128).
        input_size: the side the model sees (default: its preprocessing's crop size).
        seed: the seed of every image's start and random transforms.
        preprocessing: the normalisation (default: the model's; ImageNet's for others).
        max_memory: bytes of autograd state one batch may use; larger requests are chunked
            (default: 1 GiB on a CPU, a quarter of the free memory on a GPU).
        net: a :class:`Projector` of ``model`` to reuse (its trace and layer names).
        progress: as everywhere (docs/api.md), counting image-steps.
        device: where to compute (docs/api.md).
        precision: ``"exact"`` or ``"tf32"`` (docs/api.md).

    Returns:
        A :class:`FeatureVisResult` (``.figure()``, ``.save("grid.png")``).

    Examples:
        >>> feature_vis(load_model("zfnet"), "conv5", features=range(16)).save("conv5.png")
    """
    return _feature_vis(**locals())


def _feature_vis(model, layer, *, features, objective, negative, position, directions,
                 diversity, images_per_unit, param, decorrelate, transforms, pre_relu, steps,
                 lr, image_size, input_size, seed, preprocessing, max_memory, net, progress,
                 device, precision) -> FeatureVisResult:
    _check_options(objective, steps, images_per_unit, image_size, lr, diversity, transforms,
                   position, directions)
    net = net if net is not None else Projector(model)
    prep = preprocessing or preprocessing_for(model)
    # the model's own size where no preprocessing says it (a ViT built for 32 px)
    size = int(input_size or (prep.crop_size if preprocessing is not None
                              else net.input_size[0]))
    found, layer_name, node, skipped = _objective_node(net, objective, layer, diversity, size,
                                                       pre_relu)
    run, device = forward_to(net.traced, [node], (size, size)), model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    shape = (1,) + tuple(found.shape)  # measured once per size by the projector
    unit_list, labels = units_of(model, objective, features, directions, shape[1], layer_name)
    position = _position(objective, position, shape, layer_name)
    if objective == "direction":
        directions = torch.as_tensor(directions).to(device=device, dtype=dtype)
    score = Objective(objective, torch.tensor(unit_list, device=device), position, directions)
    forward = _forward(run, prep, size, transforms, device, dtype)
    options = dict(image_size=image_size, param=param, decorrelate=decorrelate, seed=seed,
                   device=device, dtype=dtype, transforms=transforms)
    count, start = len(unit_list) * images_per_unit, time.perf_counter()
    chunk = _chunk(forward, model, count, images_per_unit, max_memory, options)
    with progress_bar(progress, total=steps * count, desc="feature visualisation",
                      where="feature_vis", legacy=lambda old: lambda d, t, _: old(d, t)) as bar:
        images, values, reached, fired = _optimise(
            forward, score, unit_list, images_per_unit, chunk, steps, lr,
            -1.0 if negative else 1.0, diversity, options, bar)
    info = model_info(model)
    return FeatureVisResult(
        images=images, values=values, units=unit_list, labels=labels, model=model_name(model),
        weights=info.weights if info else "user", layer=layer_name, objective=objective,
        negative=bool(negative), param=param, decorrelate=bool(decorrelate), seed=int(seed),
        transforms=transforms, steps=steps, lr=float(lr), position=position, pre_relu=skipped,
        diversity=float(diversity), input_size=size, seconds=time.perf_counter() - start,
        reached=reached, fired=fired if skipped and not negative else None,
        precision=current_precision(), device=device.type)


def _forward(run, prep: Preprocessing, size: int, transforms, device, dtype):
    """``forward(rgb, draws)``: the layer's activations for images in [0, 1], transformed by
    ``draws`` (none: as they are) and normalised as the model expects."""
    mean = torch.tensor(prep.mean, device=device, dtype=dtype).reshape(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device, dtype=dtype).reshape(1, 3, 1, 1)

    def forward(rgb: Tensor, draws: Optional[Tensor]) -> Tensor:
        return run((transform_batch(rgb, size, transforms, draws) - mean) / std)[0]

    return forward


def _check_options(objective, steps, images_per_unit, image_size, lr, diversity, transforms,
                   position, directions):
    check_feature_vis_options(objective, steps=steps, images_per_unit=images_per_unit,
                              image_size=image_size, lr=lr, diversity=diversity,
                              position=position, directions=directions)
    if transforms is not None and not isinstance(transforms, Transforms):
        raise ArgumentError("transforms must be a Transforms (e.g. LUCID_TRANSFORMS) or None")


def _objective_node(net: Projector, objective: str, layer: Optional[str], diversity: float,
                    size: int, pre_relu: bool):
    """The layer the objective reads, its name in titles, the graph node optimised (a ReLU's
    input with ``pre_relu``) and whether that ReLU was skipped."""
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
    return found, layer_name, node, skipped


def _position(objective: str, position, shape, layer_name: str):
    """A neuron's ``(y, x)`` (default: the map's centre), checked; ``None`` otherwise."""
    if objective != "neuron":
        return None
    if len(shape) != 4:
        raise ArgumentError(f"{layer_name} has no spatial map (shape {list(shape)}): use "
                            f"the channel objective")
    position = tuple(position) if position is not None else (shape[2] // 2, shape[3] // 2)
    if not (len(position) == 2 and 0 <= position[0] < shape[2]
            and 0 <= position[1] < shape[3]):
        raise ArgumentError(f"position {position} is outside {layer_name}'s "
                            f"{shape[2]}x{shape[3]} map")
    return position


def _chunk(forward, model, count: int, group: int, max_memory, options) -> int:
    """Images optimised per batch: all of them, or as many whole units' groups as the memory
    budget holds (measured on one image: what autograd keeps, twice for the gradients)."""
    if count <= group:
        return count
    transforms, seed, device = options["transforms"], options["seed"], options["device"]
    probe = ImageParam([0], options["image_size"], param=options["param"],
                       decorrelate=options["decorrelate"], seed=seed, device=device,
                       dtype=options["dtype"])
    probe_draws = draw_transforms([0], 1, transforms, seed)[0] if transforms else None
    per_image = 2 * saved_bytes(lambda: forward(probe.rgb(), probe_draws), model) + 1
    budget = max_memory if max_memory is not None else (
        memory_budget(None, device) if device.type == "cuda" else 2**30)
    return max(group, min(count, budget // per_image) // group * group)


def _optimise(forward, score, unit_list, group, chunk, steps, lr, sign, diversity, options,
              bar):
    """Adam on every image, a chunk at a time: the images ``[units, group, 3, S, S]``, their
    objective values before ``sign`` ``[units, group]``, whether a gradient of the objective
    ever reached each image and whether each unit is > 0 somewhere on its final image (both
    ``[units, group]`` bool)."""
    transforms, seed, device = options["transforms"], options["seed"], options["device"]
    count = len(unit_list) * group
    images, values, reached, fired = [], [], [], []
    for first in range(0, count, chunk):
        indices = list(range(first, min(count, first + chunk)))
        rows = torch.tensor([i // group for i in indices], device=device)
        # each image's random stream is its unit's (and its place among the unit's images)
        streams = [unit_list[i // group] * group + i % group for i in indices]
        img = ImageParam(streams, options["image_size"], param=options["param"],
                         decorrelate=options["decorrelate"], seed=seed, device=device,
                         dtype=options["dtype"])
        draws = draw_transforms(streams, steps, transforms, seed) if transforms else None
        optimiser = torch.optim.Adam([img.params], lr=lr)
        moved = torch.zeros(len(indices), dtype=torch.bool, device=device)
        for step in range(steps):
            act = forward(img.rgb(), draws[step] if draws is not None else None)
            objective = -sign * score(act, rows).sum()
            penalty = diversity * gram_penalty(act, group) if diversity else None
            img.params.grad = step_gradient(img.params, objective, penalty, moved)
            optimiser.step()
            bar.update(len(indices))
        with torch.no_grad():
            rgb = img.rgb()
            act = forward(rgb, None)
            values.append(score(act, rows))
            fired.append(score.fired(act, rows).cpu())
            reached.append(moved.cpu())
            images.append(rgb.float().cpu())
    size, shape = options["image_size"], (len(unit_list), group)
    return (torch.cat(images).reshape(*shape, 3, size, size),
            torch.cat(values).float().cpu().reshape(shape),
            torch.cat(reached).reshape(shape), torch.cat(fired).reshape(shape))

