"""The driver of the evaluation (issue 37): every method scored by every metric on the same
images, each method's maps computed once and shared by every metric.

:func:`evaluate` checks everything it can before any map is made (the methods, the metrics,
whether they are implemented, the boxes a localisation metric needs), then, per method:
computes its maps in batches with :func:`~deconvviz.analyses.attribution.attribute_map` (one
trace of the model for every reverse pass), builds one :class:`~.base.Inputs` and hands it to
each metric (:func:`~.base.compute`), with a random generator seeded afresh for each metric,
so that every method meets the same random draws. A method that cannot run on the model is
reported in the result (``not_applicable``), never dropped in silence.
"""
from __future__ import annotations

import os
import time
import weakref
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ... import method_table, metric_table
from ..._progress import ProgressArg, progress_bar
from ...data.boxes import Box, box_masks, check_boxes, read_boxes
from ...data.images import ImagesArg, image_list, preprocessing_for
from ...data.zoo import model_info, model_name
from ...engine.guard import runs_model
from ...engine.passes.recording import images_for
from ...errors import ArgumentError, DeconvvizError, UnknownLayerError, first_line
from ..attribution import Target, attribute_map, resolve_target
from .base import Inputs, compute, registered
from .result import EvaluationResult

__all__ = ["evaluate", "resolve_methods", "resolve_metrics", "planned_passes", "BoxesArg"]

# boxes=: a file or folder of annotations, a per-image list of boxes in the model's input
# pixels ((x0, y0, x1, y1) or (x0, y0, x1, y1, name)), or masks [N, H, W] (bool)
BoxesArg = Union[None, str, "os.PathLike[str]", Tensor, Sequence[Sequence[Sequence[Any]]]]
SHOWN = 3  # images whose maps the result keeps for its figure
# metrics whose forward passes do not depend on the map: run once for every method
SHARED = frozenset({"faithfulness_correlation"})


def resolve_methods(methods: Union[None, str, Sequence[str]]) -> List[str]:
    """Method names from ``methods``: ``None`` (compare's default), ``"all"`` (every method
    of the table, registered ones included), a comma list, or a list of names."""
    if methods is None:
        return list(method_table.COMPARE_DEFAULT)
    if isinstance(methods, str):
        if methods.strip() == "all":
            return method_table.names()
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = list(dict.fromkeys(methods))
    if not names:
        raise ArgumentError("no methods to evaluate; give method names or 'all' "
                            "(dv.list_methods() lists them)")
    for name in names:
        method_table.get(name)
    return names


def resolve_metrics(metrics: Union[str, Sequence[str]]) -> List[str]:
    """Metric names from ``metrics`` (``"all"``, a family, a metric, a comma list or a list
    of these), each implemented."""
    spec = metrics if isinstance(metrics, str) else ",".join(metrics)
    names = metric_table.resolve(spec)
    for name in names:
        registered(name)
    return names


def _class_name(target) -> Optional[str]:
    """The class name ``target`` gives, if any (not an index)."""
    if isinstance(target, str) and not target.strip().lstrip("-").isdigit():
        return target
    return None


def _masks(boxes: BoxesArg, model: nn.Module, images: ImagesArg, x: Tensor,
           target=None) -> Tensor:
    """The objects' masks ``[N, H, W]`` (bool, on the images' device) from ``boxes`` (from
    an annotation file, only the boxes of the class ``target`` names, where it names one)."""
    n, size = x.shape[0], tuple(x.shape[-2:])
    if isinstance(boxes, Tensor):
        if boxes.shape != (n, *size):
            raise ArgumentError(f"masks must be [N, H, W] = {[n, *size]}, got "
                                f"{list(boxes.shape)}")
        masks = boxes.bool()
    else:
        if isinstance(boxes, (str, os.PathLike)):
            paths = image_list(images)
            if not all(isinstance(p, str) for p in paths):
                raise ArgumentError("boxes from an annotation file need the images as files "
                                    "(matched by name); give tensors' boxes as lists")
            per_image: List[List[Box]] = read_boxes(boxes, paths, preprocessing_for(model),
                                                    only=_class_name(target))
        else:
            per_image = [[_box(b, k) for b in image] for k, image in enumerate(boxes)]
            if len(per_image) != n:
                raise ArgumentError(f"boxes holds {len(per_image)} image(s)' boxes for {n} "
                                    f"image(s)")
            for k, image in enumerate(per_image):
                check_boxes(image, size, f"image {k}")
        masks = box_masks(per_image, size)
    empty = [k for k in range(n) if not masks[k].any()]
    if empty:
        raise ArgumentError(f"image {empty[0]} has no object pixel (no box)")
    return masks.to(x.device)


def _box(box: Sequence[Any], image: int) -> Box:
    if len(box) not in (4, 5):
        raise ArgumentError(f"a box of image {image} is (x0, y0, x1, y1[, name]), got "
                            f"{tuple(box)!r}")
    return (*(float(v) for v in box[:4]), str(box[4]) if len(box) == 5 else "")


def _maps(model: nn.Module, x: Tensor, method: str, target: Target, cam_layer, nets: dict,
          batch_size: int) -> Tensor:
    """``method``'s maps of ``x`` in batches of ``batch_size`` images."""
    parts = []
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        sub = Target(classes=target.classes[rows], names=target.names)
        parts.append(attribute_map(model, x[rows], method, resolved=sub, cam_layer=cam_layer,
                                   nets=nets).detach())
    return torch.cat(parts)


def _explainer(model: nn.Module, method: str, cam_layer, nets: dict, names):
    """``explain(model, images, targets)`` for the metrics that recompute maps: the user's
    model reuses its trace; another (a randomised copy) is traced afresh."""
    known = weakref.WeakKeyDictionary({model: nets})

    def explain(net: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        cache = known.setdefault(net, {}) if net is model else {}
        with torch.enable_grad():
            return attribute_map(net, images, method, cam_layer=cam_layer, nets=cache,
                                 resolved=Target(classes=[int(t) for t in targets],
                                                 names=names)).detach()
    return explain


def _cannot_run(exc: Exception, cam_layer) -> Optional[str]:
    """Why a method cannot run on this model, or ``None`` if ``exc`` is the user's error."""
    if isinstance(exc, UnknownLayerError) and cam_layer is not None:
        return None  # the user's cam_layer: their error, for every CAM
    if isinstance(exc, (DeconvvizError, RuntimeError, NotImplementedError)):
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def _checked(wanted: List[str], params: Optional[Dict[str, dict]], has_boxes: bool,
             batch_size: int) -> Dict[str, dict]:
    """Everything about the metrics that can be wrong, before any map is made: their
    parameters (as :func:`~.base.compute` would check them, later) and their boxes."""
    params = dict(params or {})
    for name, given in params.items():
        if name not in wanted:
            raise ArgumentError(f"params for {name!r}, which is not evaluated; metrics: "
                                f"{', '.join(wanted)}")
        metric_table.check_params(name, given)
    needing = [m for m in wanted if "boxes" in metric_table.get(m).needs]
    if needing and not has_boxes:
        raise ArgumentError(f"{', '.join(needing)} need(s) the objects' boxes: give boxes= "
                            f"(--boxes FILE|DIR: Pascal VOC XML or COCO JSON)")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be at least 1, got {batch_size}")
    return params


@runs_model
def evaluate(model: nn.Module, images: ImagesArg, *,
             methods: Union[None, str, Sequence[str]] = None,
             metrics: Union[str, Sequence[str]] = "faithfulness",
             target: Union[None, int, str] = None, boxes: BoxesArg = None,
             cam_layer: Optional[str] = None, params: Optional[Dict[str, dict]] = None,
             batch_size: int = 64, seed: int = 0, progress: ProgressArg = True,
             device: Optional[str] = None, precision: Optional[str] = None
             ) -> EvaluationResult:
    """Score every method by every metric on the same images (docs/evaluation.md).

    Args:
        model: the network (eval mode; never changed).
        images: photos in any form of the glossary (docs/api.md).
        methods: method names, a comma list, or ``"all"`` (every method of
            :func:`list_methods`, registered ones included); default compare's five.
        metrics: metric names, families (``faithfulness``, ``confidence``,
            ``localisation``, ``randomisation``, ``complexity``, ``robustness``) or
            ``"all"``, as a comma list or a list (``deconvviz.metric_table`` lists them).
        target: a class index or name (default: each image's top-1 class).
        boxes: the objects, for the localisation metrics: a Pascal VOC ``.xml`` file or
            folder, or a COCO instances ``.json`` (matched to image files by name, scaled to
            the crop the model sees: :func:`deconvviz.data.boxes.read_boxes`); or per image
            a list of boxes ``(x0, y0, x1, y1)`` in the model's input pixels; or masks
            ``[N, H, W]``. Where ``target`` is a class name, an annotation file's boxes of
            that class only (the pointing game's protocol: each class pointed at separately).
        cam_layer: the CAMs' layer (default: the last convolutional block).
        params: metric name -> parameters overriding the paper's defaults, e.g.
            ``{"pixel_flipping": {"steps": 32}}``.
        batch_size: images per forward pass (maps and perturbed images).
        seed: the seed of every metric's random draws (the same draws for every method).
        progress: ``True`` (a bar over methods x (maps + metrics), each metric's own steps
            beside it), ``False``, or ``progress(done, total, label)``.
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default) or ``"tf32"``; see ``docs/gpu.md``.

    Returns:
        An :class:`EvaluationResult`: ``to_markdown()``, ``to_csv()``, ``figure()``.

    Raises:
        ArgumentError: an unknown method or metric, a metric that needs boxes without them,
            a box outside its image, an image with no box.

    Examples:
        >>> r = evaluate(model, "photos/", methods="all", metrics="faithfulness")
        >>> print(r.to_markdown())
    """
    names = resolve_methods(methods)
    wanted = resolve_metrics(metrics)
    params = _checked(wanted, params, boxes is not None, batch_size)
    x, photos, paths = images_for(model, images)
    masks = _masks(boxes, model, images, x, target) if boxes is not None else None
    with torch.no_grad():
        logits = model(x)
    resolved = resolve_target(model, x, target, logits=logits)
    targets = torch.tensor(resolved.classes, dtype=torch.long, device=x.device)
    run = _Run(model, x, targets, masks, resolved, cam_layer, batch_size, seed, params)
    planned = planned_passes(wanted, x.shape[0], len(names), tuple(x.shape[-2:]), params)
    # about: a method that cannot run runs none, and SLIC makes about as many superpixels
    # as IROF asks for
    planned_text = f", about {planned:,} forward passes" if planned else ""
    with progress_bar(progress, total=len(names) * (1 + len(wanted)), unit="step",
                      desc=f"evaluate ({_count(x.shape[0], 'image')} x "
                           f"{_count(len(names), 'method')} x "
                           f"{_count(len(wanted), 'metric')}{planned_text})") as bar:
        for method in names:
            run.method(method, wanted, bar)
    info = model_info(model)
    return EvaluationResult(
        names, wanted, run.scores, run.curves, run.passes, run.seconds, run.not_applicable,
        paths, resolved, run.shown, photos[:SHOWN], model_name(model),
        info.weights if info else "user",
        metric_titles={m: metric_table.title(m, params.get(m)) for m in wanted},
        higher_is_better={m: metric_table.higher_is_better(m, params.get(m)) for m in wanted},
        params={m: _changed(m, given) for m, given in params.items()})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _changed(metric: str, given: dict) -> dict:
    """The parameters in ``given`` that differ from the metric's paper's defaults."""
    defaults = metric_table.get(metric).params
    return {k: v for k, v in given.items() if k not in defaults or repr(v) != repr(defaults[k])}


def planned_passes(metrics: List[str], images: int, methods: int, size, params) -> int:
    """The forward passes ``metrics`` will run on ``images`` of ``size`` for ``methods``
    methods (besides the methods' maps), known before they run
    (:func:`deconvviz.metric_table.forward_passes`; the :data:`SHARED` metrics' once for
    every method)."""
    total = 0
    for m in metrics:
        per = metric_table.forward_passes(m, *size, params.get(m)) or 0
        total += per * images * (1 if m in SHARED else methods)
    return total


def _within(bar, label: str):
    """A metric's own progress (its perturbation steps) shown beside the bar's count."""
    def report(done: int, total: int, what: str = "") -> None:
        bar.set_postfix_str(f"{label}: {done}/{total}", refresh=True)
    return report


class _Run:
    """One evaluation's state: the shared inputs and what each method scored."""

    def __init__(self, model, x, targets, masks, resolved, cam_layer, batch_size, seed,
                 params):
        self.model, self.x, self.targets, self.masks = model, x, targets, masks
        self.resolved, self.cam_layer, self.batch_size = resolved, cam_layer, batch_size
        self.seed, self.params = seed, params
        self.nets: dict = {}  # one trace of the model for every reverse pass
        self.scores: Dict[str, Dict[str, Tensor]] = {}
        self.curves: Dict[str, Dict[str, tuple]] = {}
        self.passes: Dict[str, Dict[str, int]] = {}
        self.seconds: Dict[str, Dict[str, float]] = {}
        self.not_applicable: Dict[str, str] = {}
        self.shown: Dict[str, Tensor] = {}
        self.shared: dict = {}  # what metrics reuse across methods (faithfulness correlation)

    def method(self, method: str, metrics: List[str], bar) -> None:
        """``method``'s maps, once, then every metric on them."""
        start = time.perf_counter()
        try:
            maps = _maps(self.model, self.x, method, self.resolved, self.cam_layer, self.nets,
                         self.batch_size)
        except Exception as exc:  # noqa: BLE001 - reported, unless it is the user's error
            why = _cannot_run(exc, self.cam_layer)
            if why is None:
                raise
            self.not_applicable[method] = why
            bar.update(1 + len(metrics), f"{method}: n/a")
            return
        self.seconds[method] = {"maps": time.perf_counter() - start}
        self.shown[method] = maps[:SHOWN].cpu()
        bar.update(1, f"{method} maps")
        inputs = Inputs(self.model, self.x, maps, self.targets, masks=self.masks,
                        explain=_explainer(self.model, method, self.cam_layer, self.nets,
                                           self.resolved.names),
                        batch_size=self.batch_size, shared=self.shared)
        self.scores[method], self.curves[method], self.passes[method] = {}, {}, {}
        for metric in metrics:
            start = time.perf_counter()
            inputs.generator = torch.Generator(self.x.device).manual_seed(self.seed)
            inputs.progress = _within(bar, f"{method} {metric}")
            score = compute(metric, inputs, **self.params.get(metric, {}))
            self.seconds[method][metric] = time.perf_counter() - start
            self.scores[method][metric] = score.per_image.detach().double().cpu()
            if score.curve is not None:
                x = score.curve_x if score.curve_x is not None else \
                    torch.linspace(0, 1, score.curve.shape[1])
                self.curves[method][metric] = (score.curve.detach().double().cpu(),
                                               x.detach().double().cpu())
            self.passes[method][metric] = int(score.forward_passes)
            bar.set_postfix_str("", refresh=False)
            bar.update(1, f"{method} {metric}")
