"""AlexNet from torchvision (the one-tower variant of Krizhevsky et al., 2012)."""
from __future__ import annotations

from ._registry import ModelSpec, register_model, torchvision_builder

# torchvision's AlexNet has no local response normalisation; a conv alias is its ReLU.
ALIASES = {
    "conv1": "features.1", "pool1": "features.2",
    "conv2": "features.4", "pool2": "features.5",
    "conv3": "features.7", "conv4": "features.9", "conv5": "features.11",
    "pool5": "features.12",
    "fc6": "classifier.2", "fc7": "classifier.5", "fc8": "classifier.6",
}

register_model(ModelSpec(
    name="alexnet",
    build=torchvision_builder("alexnet"),
    aliases=ALIASES,
    imagenet_weights="AlexNet_Weights.DEFAULT",
    paper="Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep CNNs, 2012",
))
