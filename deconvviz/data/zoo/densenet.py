"""DenseNet-121/169/201 from torchvision (Huang et al., 2016)."""
from __future__ import annotations

from typing import Dict

from ._registry import ModelSpec, register_model, torchvision_builder


def aliases() -> Dict[str, str]:
    """``conv0`` (the stem's rectified output), ``pool0``, the four dense blocks with the
    three transitions between them, ``norm5`` and the classifier ``fc``."""
    table = {"conv0": "features.relu0", "pool0": "features.pool0"}
    for block in range(1, 5):
        table[f"denseblock{block}"] = f"features.denseblock{block}"
        if block < 4:
            table[f"transition{block}"] = f"features.transition{block}"
    table.update({"norm5": "features.norm5", "fc": "classifier"})
    return table


for _name in ["densenet121", "densenet169", "densenet201"]:
    register_model(ModelSpec(
        name=_name,
        build=torchvision_builder(_name),
        aliases=aliases(),
        imagenet_weights=f"DenseNet{_name[len('densenet'):]}_Weights.DEFAULT",
        paper="Huang, Liu, van der Maaten & Weinberger, Densely Connected CNNs, 2016",
    ))
