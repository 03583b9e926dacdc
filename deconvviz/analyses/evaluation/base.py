"""What every metric is given (:class:`Inputs`), what it returns (:class:`Score`), and the
registry that maps a metric's name in :mod:`deconvviz.metric_table` to its function.

A metric is ``fn(inputs: Inputs, **params) -> Score``, registered with :func:`metric` (the
package's ``__init__`` imports every built-in metric's module, which registers it);
:func:`compute` fills in the table's defaults and refuses a parameter the metric does not
take. The driver (:func:`deconvviz.evaluate`) builds one :class:`Inputs` per method: the
maps are computed once and shared by every metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from ... import metric_table
from ...errors import ArgumentError

__all__ = ["Inputs", "Score", "metric", "compute", "registered", "content_key"]


@dataclass
class Inputs:
    """What every metric is given; the driver builds it once per method.

    Attributes:
        model: in eval mode, on its device, inside the driver's ``runs_model`` guard.
        images: ``[N, 3, H, W]`` the model's (normalised) input.
        maps: ``[N, C, H, W]`` the method's maps as :func:`deconvviz.attribute` returns them
            (C = 1 or 3).
        targets: ``[N]`` long, the explained class per image.
        masks: ``[N, H, W]`` bool, the object's pixels (boxes rasterised by the driver).
        explain: recomputes maps for ``(model, images, targets)`` (robustness,
            randomisation).
        batch_size: how many perturbed images one forward pass takes.
        baseline: ``[3]`` or ``[N, 3, H, W]``, the "removed" value; None: the metric's
            default (its ``baseline`` parameter).
        generator: the random numbers' source, seeded by the driver.
        progress: called with ``(done, total, what)``.
        shared: outputs a metric may reuse across the methods of one evaluation, keyed by
            what determines them (:func:`content_key`): faithfulness correlation's perturbed
            images do not depend on the map, and every method meets the same draws.
    """

    model: nn.Module
    images: Tensor
    maps: Tensor
    targets: Tensor
    masks: Optional[Tensor] = None
    explain: Optional[Callable[[nn.Module, Tensor, Tensor], Tensor]] = None
    batch_size: int = 64
    baseline: Optional[Tensor] = None
    generator: Optional[torch.Generator] = None
    progress: Optional[Callable[[int, int, str], None]] = None
    shared: Optional[Dict[Any, Any]] = None


def content_key(*parts: Any) -> str:
    """A digest of ``parts`` (tensors by their dtype, shape and bytes; others by ``repr``):
    equal keys mean equal inputs, so a value stored under it may be reused."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        if isinstance(part, Tensor):
            t = part.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16
                          else t.float().numpy().tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()


@dataclass
class Score:
    """A metric's answer.

    Attributes:
        per_image: ``[N]`` float64, one score per image.
        curve: ``[N, S]`` float64, where the metric has a curve (e.g. the class probability
            per step).
        curve_x: ``[S]``, the curve's abscissa (the fraction of the image removed or
            inserted).
        forward_passes: how many images the model was run on (the metric's physical floor,
            counted as bare forward passes of the full image).
    """

    per_image: Tensor
    curve: Optional[Tensor] = None
    curve_x: Optional[Tensor] = None
    forward_passes: int = 0


MetricFn = Callable[..., Score]
_REGISTRY: Dict[str, MetricFn] = {}


def metric(*names: str) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(inputs, **params) -> Score`` under each of ``names`` (each must be in
    :mod:`deconvviz.metric_table`; one function may serve several entries, e.g. ROAD's two
    orders, which differ by their defaults)."""
    def register(fn: MetricFn) -> MetricFn:
        for name in names:
            metric_table.get(name)
            if name in _REGISTRY and _REGISTRY[name] is not fn:
                raise ArgumentError(f"a metric function for {name!r} is registered already")
            _REGISTRY[name] = fn
        return fn
    return register


def registered(name: str) -> MetricFn:
    """The function registered for ``name``."""
    metric_table.get(name)
    if name not in _REGISTRY:
        raise ArgumentError(f"metric {name!r} is in the table but has no function yet; "
                            f"implemented: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def compute(name: str, inputs: Inputs, **params: Any) -> Score:
    """Metric ``name`` on ``inputs``: the table's defaults, overridden by ``params``."""
    entry = metric_table.get(name)
    fn = registered(name)
    metric_table.check_params(name, params)
    return fn(inputs, **{**entry.params, **params})
