"""Today's CNNs (SiLU, GELU, Hardswish, LayerNorm, squeeze-excitation) under every
reverse-pass method, held to an independent autograd oracle (tests/modern_oracle.py) to 1e-4
relative: torchvision's EfficientNet-B0, MobileNetV3-Large, ConvNeXt-Tiny, RegNetY-400MF and
MobileNetV2 with random weights, two layers each, both modes."""
import pytest
import torch
from conftest import assert_untouched, snapshot
from modern_oracle import modern_oracle
from oracle import rel_error
from torchvision import models

import deconvviz as dv

TOLERANCE = 1e-4
METHODS = ["deconvnet", "guided", "gradient"]


def _convnext():
    model = models.convnext_tiny()
    # torchvision starts each block's layer scale at 1e-6, which hides the block (and its
    # GELU and LayerNorm) behind the skip connection; a trained model's scales are not small.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.uniform_(0.5, 1.0)
    return model


# builder, two layers (shallow, deeper), input size
MODERN = {
    "efficientnet_b0": (models.efficientnet_b0, ["features.2", "features.4"], 96),
    "mobilenet_v3_large": (models.mobilenet_v3_large, ["features.5", "features.12"], 96),
    "convnext_tiny": (_convnext, ["features.1", "features.4"], 64),
    "regnet_y_400mf": (models.regnet_y_400mf, ["trunk_output.block1", "trunk_output.block3"],
                       96),
    "mobilenet_v2": (models.mobilenet_v2, ["features.4", "features.14"], 96),
}
_BUILT = {}


def modern(name):
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = MODERN[name][0]().eval()
    return _BUILT[name]


@pytest.mark.parametrize("name", list(MODERN))
def test_every_method_matches_the_oracle(name):
    model = modern(name)
    before = snapshot(model)
    layers, size = MODERN[name][1:]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = {}
    for method in METHODS:
        net = dv.Projector(model, method=method)
        for layer in layers:
            channels = net.record(x, layer).activations[layer].shape[1]
            features = [0, channels // 2]
            for mode in ("max", "map"):
                ours = net.project(x, layer, features, mode=mode)
                oracle = modern_oracle(model, x, layer, features, mode, method)
                assert oracle.abs().max() > 0, (method, layer, mode)
                err = rel_error(ours, oracle)
                assert err <= TOLERANCE, (method, layer, mode, err)
                expected[method, layer, mode] = oracle
    assert_untouched(model, before)
    # The conventions differ on these models (the test could tell them apart).
    for layer in layers:
        assert rel_error(expected["deconvnet", layer, "map"],
                         expected["gradient", layer, "map"]) > 1e-2
        if name != "mobilenet_v2":  # ReLU6 only: guided and gradient differ at sign flips
            assert rel_error(expected["guided", layer, "map"],
                             expected["gradient", layer, "map"]) > 1e-2
