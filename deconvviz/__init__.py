"""deconvviz: Zeiler-Fergus deconvnet visualisations for PyTorch CNNs.

>>> import deconvviz as dv
>>> model = dv.load_model("zfnet", weights=None)
>>> x, rgb = dv.load_image("examples/images/chelsea.png", model)
>>> p = dv.Deconvnet(model).project(x, "conv3", features=[0, 1, 2])

The package is layered, imports running one way (see docs/architecture.md):
``cli``/``explorer`` -> ``analyses`` -> ``engine`` | ``figures`` -> ``data`` -> ``errors``,
``choices``, ``_io``. Importing it is instant: each public name below is imported, with torch,
on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._signatures import deprecated as _deprecated
from ._version import __version__  # noqa: E402,F401

# public name -> the module that defines it
_PUBLIC = {
    "ArgumentError": "errors", "DeconvvizError": "errors", "ImageError": "errors",
    "OutputError": "errors", "UnknownLayerError": "errors", "UnknownModelError": "errors",
    "UnsupportedOpError": "errors", "WeightsError": "errors", "UnknownPrecisionError": "errors",
    "ModelInfo": "data.zoo", "UntrainedWarning": "data.zoo", "list_models": "data.zoo",
    "load_model": "data.zoo", "model_info": "data.zoo", "weights_digest": "data.zoo",
    "load_image": "data.images",
    "Deconvnet": "engine", "GuidedBackprop": "engine", "Gradient": "engine",
    "Projector": "engine",
    "ReverseStep": "engine", "ReversePass": "engine", "Recording": "engine",
    "Layer": "engine", "list_layers": "engine", "list_methods": "analyses",
    "register_method": "engine", "unregister_method": "engine", "RuleSet": "engine",
    "attribute": "analyses", "compare": "analyses", "Comparison": "analyses",
    "sanity_check": "analyses", "SanityResult": "analyses",
    "crp": "analyses", "ConceptRelevance": "analyses", "layer_relevance": "analyses",
    "LayerRelevance": "analyses", "Composite": "engine", "relevance_method": "engine",
    "occlusion": "analyses", "OcclusionResult": "analyses", "invariance": "analyses",
    "InvarianceResult": "analyses", "correspondence": "analyses",
    "CorrespondenceResult": "analyses",
    "Projections": "analyses", "ShowReport": "analyses", "project": "analyses",
    "show": "analyses", "ScanResult": "analyses", "load_scan": "analyses",
    "scan": "analyses", "same_hits": "analyses", "atlas": "analyses",
    "AtlasResult": "analyses",
    "train": "training", "TrainResult": "training", "evolution": "analyses",
    "EvolutionResult": "analyses", "filters": "analyses", "Attribution": "analyses",
    "TrainingModeError": "engine.guard",
    "FilterResult": "analyses", "read_metrics": "training",
    "feature_vis": "analyses", "FeatureVisResult": "analyses",
    "explore": "explorer",
    "evaluate": "analyses", "EvaluationResult": "analyses",
}

__all__ = sorted(_PUBLIC)

# removed aliases, kept one release with a DeprecationWarning:
# name -> (what to use, the module that holds it, its name there)
_DEPRECATED = {"DeconvStep": ("ReverseStep", "engine", "ReverseStep"),
               "filter_figure": ("filters(...).figure()", "analyses.filters", "filter_figure")}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        new, module, attribute = _DEPRECATED[name]
        _deprecated(__name__, name, new)
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # for type checkers, IDEs and the API docs: the same names, eagerly
    from .analyses import (AtlasResult, Attribution, Comparison, ConceptRelevance, CorrespondenceResult,
                           EvaluationResult, EvolutionResult, evaluate, FeatureVisResult, FilterResult, LayerRelevance,
                           crp, feature_vis, layer_relevance,
                           InvarianceResult, OcclusionResult, Projections, SanityResult,
                           ScanResult, ShowReport, atlas, attribute, compare,
                           correspondence, evolution, filters, invariance,
                           list_methods, load_scan, occlusion, project,
                           same_hits, sanity_check, scan, show)
    from .data.images import load_image
    from .data.zoo import (ModelInfo, UntrainedWarning, list_models, load_model, model_info,
                           weights_digest)
    from .engine import (Composite, Deconvnet, Gradient, GuidedBackprop, Layer,
                         Projector, Recording, ReversePass, ReverseStep, RuleSet, list_layers,
                         register_method, relevance_method, unregister_method)
    from .errors import (ArgumentError, DeconvvizError, ImageError, OutputError,
                         UnknownLayerError, UnknownModelError, UnknownPrecisionError,
                         UnsupportedOpError, WeightsError)
    from .engine.guard import TrainingModeError
    from .explorer import explore
    from .training import TrainResult, read_metrics, train
