"""GoogLeNet (Inception v1) from torchvision, without the auxiliary heads.

With ImageNet weights torchvision turns on ``transform_input`` (the weights expect inputs
scaled to [-1, 1]; the model converts ImageNet-normalised inputs itself); with random
weights it stays off. deconvviz keeps that behaviour.
"""
from __future__ import annotations

from ._registry import ModelSpec, register_model


def googlenet(weights=None, num_classes: int = 1000):
    """torchvision's GoogLeNet without auxiliary heads (``weights``: a weights enum or None)."""
    from torchvision import models

    if weights is None:
        return models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                num_classes=num_classes)
    # torchvision loads ImageNet weights into a model with auxiliary heads; drop them after.
    model = models.googlenet(weights=weights)
    model.aux_logits, model.aux1, model.aux2 = False, None, None
    return model


ALIASES = {
    "conv1": "conv1", "pool1": "maxpool1", "conv2": "conv2", "conv3": "conv3",
    "pool2": "maxpool2", "inception3a": "inception3a", "inception3b": "inception3b",
    "pool3": "maxpool3", "inception4a": "inception4a", "inception4b": "inception4b",
    "inception4c": "inception4c", "inception4d": "inception4d", "inception4e": "inception4e",
    "pool4": "maxpool4", "inception5a": "inception5a", "inception5b": "inception5b",
    "pool5": "avgpool", "fc": "fc",
}

register_model(ModelSpec(
    name="googlenet", build=googlenet, aliases=ALIASES,
    imagenet_weights="GoogLeNet_Weights.DEFAULT",
    paper="Szegedy et al., Going Deeper with Convolutions, 2014",
    extra={"drop_prefixes": ("aux1.", "aux2.")},
))
