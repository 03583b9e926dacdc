"""Layer tables as a user reads them: receptive fields where gates and channels-last blocks
sit (the cone's, not the whole image), and shapes at the model's own input size. Models are
built on the meta device where only shapes matter (no weights, no arithmetic)."""
import pytest
import torch
from conftest import invoke
from torch import nn
from torchvision import models
from torchvision.ops import SqueezeExcitation

import deconvviz as dv


def _meta(builder):
    with torch.device("meta"):
        return builder().eval()


def _fields(model):
    return {layer.path: layer.rf_size for layer in dv.list_layers(model, all_modules=True)}



def _without_gates(model):
    for name, child in list(model.named_children()):
        if isinstance(child, SqueezeExcitation):
            setattr(model, name, nn.Identity())
        else:
            _without_gates(child)
    return model


@pytest.mark.parametrize("builder", [models.efficientnet_b0, models.mobilenet_v3_large])
def test_a_gate_does_not_widen_the_receptive_field(builder):
    gated = _fields(_meta(builder))
    plain = _fields(_without_gates(_meta(builder)))
    deep = [path for path in plain if path.startswith("features.") and path.count(".") == 1]
    assert len(deep) >= 8
    for path in deep:  # a gate multiplies by a recorded per-channel constant
        assert gated[path] == plain[path], path
    assert gated["features.4"] < 224


def test_convnext_fields_follow_its_channels_last_blocks():
    fields = _fields(_meta(models.convnext_tiny))
    # by hand: the 4x4 stem at stride 4, then three blocks of 7x7 depthwise convolutions at
    # stride 4 (each adds 6 * 4), then the 2x2 downsampling at stride 4
    assert fields["features.0"] == 4
    assert fields["features.1.0.block.2"] == 4 + 6 * 4  # LayerNorm on the permuted map
    assert fields["features.1"] == 4 + 3 * 6 * 4
    assert fields["features.2"] == 4 + 3 * 6 * 4 + 4


def test_layers_use_the_models_own_input_size():
    result = invoke("layers", "--model", "torchvision:efficientnet_b3")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.split()[1] == "features.0")
    assert "40x150x150" in row  # 300 / 2, not 224 / 2 = 112
    result = invoke("layers", "--model", "torchvision:efficientnet_b3", "--input-size", "224")
    assert "40x112x112" in result.stdout
