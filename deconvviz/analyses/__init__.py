"""Analyses: run the engine over images and return result objects that draw and save
themselves.

- :mod:`.projection`: one image's projections (:func:`project`, :func:`show`).
- :mod:`.dataset_scan`: the strongest activations of every feature over a dataset.
- :mod:`.top_hits`: a scan's top hits projected, for Zeiler & Fergus Fig. 2.
- :mod:`.atlas`: every unit of a scan as a static website (:func:`atlas`).
- :mod:`.attribution`: every method's attribution of a class or a unit (:func:`attribute`).
- :mod:`.comparison`: methods side by side (:func:`compare`).
- :mod:`.crp`: concept-conditional heatmaps (:func:`crp`) and a class's relevance at a layer.
- :mod:`.sanity`: Adebayo's cascading randomisation (:func:`sanity_check`).
- :mod:`.occlusion`, :mod:`.invariance`, :mod:`.correspondence`: the paper's Fig. 7, Fig. 5
  and Table 1.
- (training is :mod:`deconvviz.training`, a layer of its own beside this one)
- :mod:`.evolution`, :mod:`.filters`: feature evolution over checkpoints (Fig. 4) and
  first-layer filter diagnostics (Fig. 6).
- :mod:`.feature_vis`: the image each unit wants, by optimisation (:func:`feature_vis`).
- :mod:`.evaluation`: every method scored by every metric (:func:`evaluate`): the metrics,
  the driver (:mod:`.evaluation.evaluate`) and its result (:mod:`.evaluation.result`).
"""
from . import filters as _filters
from .atlas import AtlasResult, atlas
from .attribution import Attribution, attribute, list_methods
from .comparison import Comparison, compare
from .correspondence import CorrespondenceResult, correspondence
from .crp import ConceptRelevance, LayerRelevance, crp, layer_relevance
from .dataset_scan import scan
from .evaluation.evaluate import evaluate
from .evaluation.result import EvaluationResult
from .evolution import EvolutionResult, evolution
from .feature_vis import FeatureVisResult, feature_vis
from .filters import FilterResult, filter_stats, filters
from .invariance import InvarianceResult, invariance
from .occlusion import OcclusionResult, occlusion
from .projection import Projections, project, project_layers
from .sanity import SanityResult, sanity_check
from .scan_result import Hit, ScanResult, load_scan, same_hits
from .showing import ShowReport, show
from .top_hits import FeatureHits, project_hits, top_hits_figure

__all__ = ["evaluate", "EvaluationResult", "ConceptRelevance", "LayerRelevance", "crp", "layer_relevance",
           "AtlasResult", "atlas", "EvolutionResult", "FeatureVisResult", "feature_vis",
           "FilterResult", "evolution",
           "Attribution", "filter_stats", "filters", "Comparison", "CorrespondenceResult",
           "InvarianceResult", "OcclusionResult", "correspondence", "invariance", "occlusion",
           "SanityResult", "attribute", "compare", "list_methods", "sanity_check", "FeatureHits",
           "Hit", "Projections", "ScanResult", "ShowReport", "load_scan", "project",
           "project_hits", "project_layers", "same_hits", "scan", "top_hits_figure", "show"]

from .._signatures import deprecated_names  # noqa: E402

# removed aliases, kept one release with a DeprecationWarning
__getattr__ = deprecated_names(__name__, {
    "filter_figure": ("filters(...).figure()", lambda: _filters.filter_figure)})
