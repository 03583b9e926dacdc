"""The evaluation metrics (issue 37): each metric of :mod:`deconvviz.metric_table` as a
function of the shared :class:`Inputs`, returning a :class:`Score`.

- :mod:`.base`: :class:`Inputs`, :class:`Score`, the registry (:func:`metric`,
  :func:`compute`).
"""
from .base import Inputs, Score, compute, metric, registered

__all__ = ["Inputs", "Score", "compute", "metric", "registered"]
