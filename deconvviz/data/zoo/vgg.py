"""VGG16 and VGG19 from torchvision (Simonyan & Zisserman, 2014)."""
from __future__ import annotations

from typing import Dict, List, Union

from ._registry import ModelSpec, register_model, torchvision_builder

# torchvision's configurations: conv widths, "M" for a max-pool.
CONFIGS: Dict[str, List[Union[int, str]]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def aliases(config: List[Union[int, str]]) -> Dict[str, str]:
    """``conv{block}_{i}`` -> its ReLU in ``features``, ``pool{block}``, then fc6..fc8."""
    table: Dict[str, str] = {}
    index, block, conv = 0, 1, 1
    for item in config:
        if item == "M":
            table[f"pool{block}"] = f"features.{index}"
            index, block, conv = index + 1, block + 1, 1
        else:
            table[f"conv{block}_{conv}"] = f"features.{index + 1}"  # conv, then its ReLU
            index, conv = index + 2, conv + 1
    table.update({"fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"})
    return table


for _name, _weights in [("vgg16", "VGG16_Weights"), ("vgg19", "VGG19_Weights")]:
    register_model(ModelSpec(
        name=_name,
        build=torchvision_builder(_name),
        aliases=aliases(CONFIGS[_name]),
        imagenet_weights=f"{_weights}.DEFAULT",
        paper="Simonyan & Zisserman, Very Deep Convolutional Networks, 2014",
    ))
