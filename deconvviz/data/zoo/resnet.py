"""ResNet-18/34/50/101/152 from torchvision (He et al., 2015)."""
from __future__ import annotations

from typing import Dict, Tuple

from ._registry import ModelSpec, register_model, torchvision_builder

# Residual blocks per stage (torchvision's layer1..layer4).
BLOCKS: Dict[str, Tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3),
}


def aliases(blocks: Tuple[int, ...]) -> Dict[str, str]:
    """``conv1`` (the stem's rectified output), ``pool1``, each stage and each block, ``fc``."""
    table = {"conv1": "relu", "pool1": "maxpool"}
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            table[f"layer{stage}.{block}"] = f"layer{stage}.{block}"
        table[f"layer{stage}"] = f"layer{stage}"
    table.update({"pool5": "avgpool", "fc": "fc"})
    return table


for _name, _blocks in BLOCKS.items():
    register_model(ModelSpec(
        name=_name,
        build=torchvision_builder(_name),
        aliases=aliases(_blocks),
        imagenet_weights=f"ResNet{_name[len('resnet'):]}_Weights.DEFAULT",
        paper="He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, 2015",
    ))
