"""The model zoo: ZFNet, and AlexNet, VGG, GoogLeNet, ResNet and DenseNet from torchvision.

Importing the zoo registers every model without importing torch; building or loading one
(:func:`load_model`) imports it.
"""
# Imported for registration, in the order list_models() reports them.
from typing import TYPE_CHECKING

from . import zfnet, alexnet, vgg, googlenet, resnet, densenet  # noqa: F401,I001
from . import external  # noqa: F401,I001  (torchvision:NAME and timm:NAME)
from ._registry import ModelSpec, get_spec, list_models, register_model

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_model", "checkpoint_payload", "load_weights_into",
           "class_names", "ModelInfo", "ModelSpec", "Preprocessing", "UntrainedWarning", "ZFNet",
           "count_parameters", "get_spec", "list_models", "load_model", "model_info", "model_name",
           "register_model", "weights_digest", "weights_label", "cached_weights"]

_LAZY = {"ModelInfo": "._api", "Preprocessing": "._api", "UntrainedWarning": "._api",
         "count_parameters": "._api", "load_model": "._api", "model_info": "._api",
         "model_name": "._api",
         "class_names": "._api", "ZFNet": ".zfnet_network",
         "checkpoint_payload": "._api", "checkpoint_model": "._api",
         "load_weights_into": "._api",
         "CHECKPOINT_FORMAT": "._api", "weights_digest": "._api", "weights_label": "._api",
         "cached_weights": "._api"}


def __getattr__(name: str):
    if name in _LAZY:  # torch is imported on first use, not with the zoo's names
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and the API docs: the same names, imported eagerly
    from ._api import (CHECKPOINT_FORMAT, ModelInfo, Preprocessing, UntrainedWarning,
                       checkpoint_model, checkpoint_payload, class_names, count_parameters,
                       load_model, load_weights_into, model_info, model_name, weights_digest,
                       weights_label, cached_weights)
    from .zfnet_network import ZFNet
