import pytest
import torch
from conftest import ZOO, zoo_model
from torch import nn

import deconvviz as dv
from deconvviz.data.zoo import get_spec


@pytest.mark.parametrize("name", ZOO)
def test_every_alias_resolves_to_a_module_output(name):
    layers = dv.list_layers(zoo_model(name))
    assert [l.alias for l in layers] == list(get_spec(name).aliases)
    for layer in layers:
        zoo_model(name).get_submodule(layer.path)  # a real module path
        assert layer.rf_size >= 1


@pytest.mark.parametrize("model,alias,size,stride", [
    ("zfnet", "conv3", 75, 16),
    ("alexnet", "conv5", 163, 16),
    ("vgg16", "conv3_3", 40, 4),
    ("vgg16", "conv5_3", 196, 16),
])
def test_receptive_fields(model, alias, size, stride):
    layer = next(l for l in dv.list_layers(model) if l.alias == alias)
    assert (layer.rf_size, layer.rf_stride) == (size, stride)


def test_receptive_field_by_hand_with_padding():
    # conv 3x3 p1 -> pool 2/2 -> conv 3x3 p1: size 1+2 -> 4 -> 4+2*2=8, jump 2, start -1-1*2=-3
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1))
    layer = next(l for l in dv.list_layers(net, input_size=16) if l.path == "3")
    assert layer.geometry.size == (8, 8) and layer.geometry.stride == (2, 2)
    assert layer.geometry.start == (-3, -3)
    assert layer.geometry.window(1, 2) == (-1, 1, 8, 8)


def test_unknown_layer_suggests_and_says_how_to_list():
    net = dv.Deconvnet(zoo_model("vgg16"))
    with pytest.raises(dv.UnknownLayerError) as info:
        net.reverse_pass("conv3_4")
    assert "conv3_3" in str(info.value) and "deconvviz layers" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_alias_and_module_path_are_the_same_layer():
    net = dv.Deconvnet(zoo_model("vgg16"))
    x = torch.randn(1, 3, 64, 64)
    a = net.project(x, "conv3_3", features=5)
    b = net.project(x, "features.15", features=5)
    assert torch.equal(a, b)


def test_module_called_twice_is_addressed_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu, self.conv2 = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.relu(self.conv2(self.relu(self.conv1(x))))

    deconv = dv.Deconvnet(Twice())
    with pytest.raises(dv.UnknownLayerError, match="relu@0 to relu@1"):
        deconv.reverse_pass("relu")
    assert len(deconv.reverse_pass("relu@1")) == 4
    assert len(deconv.reverse_pass("relu@0")) == 2
    layers = dv.list_layers(Twice(), input_size=16)
    assert [l.path for l in layers] == ["conv1", "relu@0", "conv2", "relu@1"]
