"""The model zoo: ZFNet, and AlexNet, VGG, GoogLeNet, ResNet and DenseNet from torchvision."""
# Imported for registration, in the order list_models() reports them.
from . import zfnet, alexnet, vgg, googlenet, resnet, densenet  # noqa: F401,I001
from ._api import (ModelInfo, Preprocessing, UntrainedWarning, count_parameters, load_model,
                   model_info)
from ._registry import ModelSpec, get_spec, list_models, register_model
from .zfnet import ZFNet

__all__ = ["ModelInfo", "ModelSpec", "Preprocessing", "UntrainedWarning", "ZFNet",
           "count_parameters", "get_spec", "list_models", "load_model", "model_info",
           "register_model"]
