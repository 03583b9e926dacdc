"""ZFNet's zoo entry; the network, written from Zeiler & Fergus (2013), Fig. 3, is in
:mod:`.zfnet_network`.

224x224x3 -> conv1 96@7x7/2 -> 110x110 -> pool 3x3/2 -> 55x55 -> contrast norm
-> conv2 256@5x5/2 -> 26x26 -> pool 3x3/2 -> 13x13 -> contrast norm
-> conv3 384@3x3 -> conv4 384@3x3 -> conv5 256@3x3 (13x13) -> pool 3x3/2 -> 6x6x256
-> fc6 4096 -> fc7 4096 -> fc8 1000.  62,357,608 parameters.

Pools use Caffe's ceil mode, which gives the paper's 55, 13 and 6. The adaptive average pool
before fc6 is the identity at 224x224 (as in torchvision's AlexNet) and lets other input
sizes reach the classifier. No public ImageNet weights exist.
"""
from __future__ import annotations

from ._registry import ModelSpec, register_model


def zfnet(weights=None, num_classes: int = 1000):
    """Build ZFNet (random initialisation; it has no torchvision weights)."""
    from .zfnet_network import zfnet as build

    return build(weights, num_classes=num_classes)


ALIASES = {
    "conv1": "features.relu1", "pool1": "features.pool1", "norm1": "features.norm1",
    "conv2": "features.relu2", "pool2": "features.pool2", "norm2": "features.norm2",
    "conv3": "features.relu3", "conv4": "features.relu4", "conv5": "features.relu5",
    "pool5": "features.pool5",
    "fc6": "classifier.relu6", "fc7": "classifier.relu7", "fc8": "classifier.fc8",
}

register_model(ModelSpec(
    name="zfnet", build=zfnet, aliases=ALIASES, imagenet_weights=None,
    paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, 2013",
))
