"""Figures: matplotlib layouts of results they are given, for notebooks and papers.

A figure never runs a model: this package imports neither the engine nor the zoo (checked by
import-linter). Results draw themselves (``result.figure()``) by calling down into it.
"""
from ..choices import SCALINGS  # noqa: E402  (re-exported: the display conventions)
from .base import FIGURE_FORMATS, PAGE_WIDTH, Figure, combine, mosaic, picture, save_figure
from .display import crop_window, shared_scale, to_uint8
from .evaluation import evaluation_figure
from .feature_vis import feature_vis_grid
from .incremental import changed_windows_figure
from .methods import attribution_figure, comparison_grid, sanity_figure
from .paper import correspondence_figure, invariance_figure, occlusion_figure
from .projections import layer_overview, patch_grid, projection_grid
from .relevance import channel_relevance, concept_figure, concept_heatmaps, relevance_rgb
from .scan_grid import scan_figure
from .training import evolution_figure, filters_figure, training_curves

__all__ = ["FIGURE_FORMATS", "Figure", "PAGE_WIDTH", "SCALINGS", "attribution_figure",
           "changed_windows_figure", "channel_relevance", "combine", "comparison_grid",
           "concept_figure", "concept_heatmaps", "evaluation_figure", "picture", "correspondence_figure", "crop_window", "evolution_figure",
           "feature_vis_grid", "filters_figure", "relevance_rgb",
           "training_curves", "invariance_figure", "occlusion_figure",
           "sanity_figure",
           "layer_overview", "mosaic", "patch_grid", "projection_grid", "save_figure",
           "scan_figure", "shared_scale", "to_uint8"]
