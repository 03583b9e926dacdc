"""deconvviz: Zeiler-Fergus deconvnet visualisations for PyTorch CNNs.

>>> import deconvviz as dv
>>> model = dv.load_model("zfnet", weights=None)
>>> x, rgb = dv.load_image("examples/images/chelsea.png", model)
>>> p = dv.Deconvnet(model).project(x, layer="conv3", feature=[0, 1, 2])
"""
from .deconvnet import Deconvnet, DeconvStep, ReversePass
from .explore import explore
from .errors import (ArgumentError, DeconvvizError, ImageError, UnknownLayerError,
                     UnknownModelError, UnsupportedOpError, WeightsError)
from .images import load_image
from .scan import ScanResult, load_scan, scan
from .visualize import Projections, project
from .layers import Layer, list_layers
from .recording import Recording
from .zoo import ModelInfo, UntrainedWarning, list_models, load_model, model_info

__version__ = "0.1.0"

__all__ = [
    "ArgumentError", "DeconvStep", "Deconvnet", "DeconvvizError", "ImageError", "Layer",
    "ModelInfo", "Recording", "ReversePass", "UnknownLayerError", "UnknownModelError",
    "UnsupportedOpError", "UntrainedWarning", "WeightsError", "explore", "list_layers",
    "list_models", "load_image", "load_model", "load_scan", "model_info", "project",
    "Projections", "scan", "ScanResult",
]
