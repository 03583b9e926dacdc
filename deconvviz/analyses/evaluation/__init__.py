"""The evaluation metrics (issue 37): each metric of :mod:`deconvviz.metric_table` as a
function of the shared :class:`Inputs`, returning a :class:`Score`.

- :mod:`.base`: :class:`Inputs`, :class:`Score`, the registry (:func:`metric`,
  :func:`compute`).
- :mod:`.perturbation`: the shared arithmetic (channels summed, pixel order, baselines,
  batched forward passes counted, correlations).
- :mod:`.faithfulness` (pixel flipping, region perturbation, RISE's deletion and
  insertion, faithfulness correlation), :mod:`.regions` and :mod:`.chain_runner` (region
  perturbation's steps, incremental where the model allows), :mod:`.road`, :mod:`.irof`;
- :mod:`.confidence`, :mod:`.localisation`, :mod:`.randomisation`, :mod:`.complexity`,
  :mod:`.robustness`.
"""
from . import (  # noqa: F401  (each registers its metrics)
    complexity,
    confidence,
    faithfulness,
    irof,
    localisation,
    randomisation,
    road,
    robustness,
)
from .base import Inputs, Score, compute, metric, registered

__all__ = ["Inputs", "Score", "compute", "metric", "registered"]
