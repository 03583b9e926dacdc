"""Analyses: run the engine over images and return result objects that draw and save
themselves.

- :mod:`.projection`: one image's projections (:func:`project`, :func:`show`).
- :mod:`.dataset_scan`: the strongest activations of every feature over a dataset.
- :mod:`.top_hits`: a scan's top hits projected, for Zeiler & Fergus Fig. 2.
"""
from .dataset_scan import Hit, ScanResult, load_scan, same_hits, scan
from .projection import Projections, ShowReport, project, project_layers, show
from .top_hits import FeatureHits, project_hits, top_hits_figure

__all__ = ["FeatureHits", "Hit", "Projections", "ScanResult", "ShowReport", "load_scan",
           "project", "project_hits", "project_layers", "same_hits", "scan", "top_hits_figure",
           "show"]
