"""Your own CNN: the idioms people write, and torchvision's CNNs just outside the zoo, each
held to the independent oracle (tests/oracle.py) to 1e-4 relative."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_untouched, captured_outputs, snapshot
from oracle import oracle_project, rel_error
from torch import nn
from torchvision import models
from torchvision.ops import StochasticDepth

import deconvviz as dv
from deconvviz.engine.guard import TrainingModeError

TOLERANCE = 1e-4


class LeNetish(nn.Module):
    """The tutorials' flatten, and other shape arithmetic, on the way to the classifier."""

    def __init__(self, idiom):
        super().__init__()
        self.idiom = idiom
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        if self.idiom == "size(0)":
            x = x.view(x.size(0), -1)
        elif self.idiom == "shape[0]":
            x = x.reshape(x.shape[0], -1)
        elif self.idiom == "unpacked":
            n, c, h, w = x.shape
            x = x.view(n, c * h * w)
        else:  # x.size()[1:]
            x = x.view(-1, x.size()[1:].numel())
        return self.fc1(x)


@pytest.mark.parametrize("idiom", ["size(0)", "shape[0]", "unpacked", "size()[1:]"])
@pytest.mark.parametrize("mode", ["max", "map"])
def test_shape_arithmetic_traces_as_constants(idiom, mode):
    torch.manual_seed(0)
    model = LeNetish(idiom).eval()
    x = torch.randn(2, 3, 32, 32)
    ours = dv.Deconvnet(model).project(x, "fc1", features=[1, 4], mode=mode)
    expected = oracle_project(model, x, "fc1", [1, 4], mode)
    assert rel_error(ours, expected) <= TOLERANCE and expected.abs().max() > 0


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        return F.relu(self.a(x)), F.relu(self.b(x))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = TwoHeads()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        left, right = self.heads(x)
        return self.pool(torch.cat([left, right], dim=1))


def test_a_module_returning_a_tuple_is_addressed_by_index():
    torch.manual_seed(0)
    model = Branchy().eval()
    net = dv.Deconvnet(model)
    with pytest.raises(dv.UnknownLayerError, match=r"returns 2 values .* heads\[0\], heads\[1\]"):
        net.project(torch.randn(1, 3, 16, 16), "heads", features=0)
    paths = [layer.path for layer in dv.list_layers(model)]
    assert "heads[0]" in paths and "heads[1]" in paths  # shown by `deconvviz layers`
    x = torch.randn(2, 3, 16, 16)
    with captured_outputs(model.heads, index=1) as captured:
        ours = net.project(x, "heads[1]", features=3, mode="map")
        xx = x.clone().requires_grad_(True)
        model(xx)
    # By hand: seed the second output's map with its values; the deconvnet rectifies at the
    # ReLU, then applies the transposed convolution of heads.b.
    act = captured[0].detach()
    seed = torch.zeros_like(act)
    seed[:, 3] = act[:, 3]
    expected = torch.nn.grad.conv2d_input(x.shape, model.heads.b.weight.detach(),
                                          F.relu(seed), padding=1)
    assert rel_error(ours, expected) <= TOLERANCE and expected.abs().max() > 0


def test_dropout_in_training_mode_is_refused_and_the_model_left_alone():
    model = dv.load_model("alexnet", weights=None).train()
    before = snapshot(model)
    # refused by the guard every model-running call passes through, before any forward
    with pytest.raises(TrainingModeError, match=r"training mode.*model\.eval\(\)"):
        dv.Deconvnet(model).project(torch.randn(1, 3, 64, 64), "fc7", features=3)
    assert_untouched(model, before)
    model.eval()
    assert dv.Deconvnet(model).project(torch.randn(1, 3, 64, 64), "fc7", features=3).shape == \
        (1, 3, 64, 64)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.depth = StochasticDepth(0.5, "row")

    def forward(self, x):
        return F.relu(x + self.depth(self.conv(x)))


def test_stochastic_depth_is_the_identity_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Residual()).eval()
    x = torch.randn(2, 3, 16, 16)
    ours = dv.Deconvnet(model).project(x, "1", features=[0, 2], mode="map")
    assert rel_error(ours, oracle_project(model, x, "1", [0, 2], "map")) <= TOLERANCE
    model.train()
    with pytest.raises(dv.UnsupportedOpError, match="stochastic_depth.*training mode"):
        dv.Deconvnet(model).reverse_pass("1")


@pytest.mark.agreement
@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_relu6_in_every_method(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 8, 3),
                          nn.Hardtanh(0.0, 6.0), nn.MaxPool2d(2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(8)  # push some inputs above 6, where the methods differ
    x = torch.randn(2, 3, 20, 20)
    net = dv.Projector(model, method=method)
    for mode in ("max", "map"):
        ours = net.project(x, "4", features=[0, 5], mode=mode)
        expected = oracle_project(model, x, "4", [0, 5], mode, method=method)
        assert rel_error(ours, expected) <= TOLERANCE, mode
    # Hardtanh(-1, 1) is no rectifier: like any other op, its exact vector-Jacobian product
    text = str(dv.Deconvnet(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Hardtanh())).reverse_pass("1"))
    assert "Hardtanh(-1.0, 1.0)" in text and "vector-Jacobian product" in text


# torchvision's ReLU CNNs, random weights, at half their native input size (112 for 224,
# 149 for Inception's 299, odd as it is): the agreement with the oracle is the ops', not the
# size's (the zoo's runs at 64 px); the layers' maps are still 7x7 to 16x16, and the whole
# set takes a fifth of the time it took at native size.
BEYOND_THE_ZOO = [
    (models.squeezenet1_1, "features.6", 112),
    (lambda: models.inception_v3(weights=None, aux_logits=False, init_weights=True),
     "Mixed_5c", 149),
    (models.mnasnet0_5, "layers.9", 112),
    (models.regnet_x_400mf, "trunk_output.block2", 112),
    (models.resnext50_32x4d, "layer2", 112),
    (models.wide_resnet50_2, "layer2", 112),
    (models.vgg11_bn, "features.14", 112),
    (models.mobilenet_v2, "features.7", 112),
]


@pytest.mark.agreement
@pytest.mark.parametrize("build,layer,size", BEYOND_THE_ZOO,
                         ids=[b[1] for b in BEYOND_THE_ZOO])
def test_beyond_the_zoo(build, layer, size):
    torch.manual_seed(0)
    model = build().eval()
    before = snapshot(model)
    x = torch.randn(1, 3, size, size)
    net = dv.Deconvnet(model)
    channels = net.record(x, layer).activations[layer].shape[1]
    for mode in ("max", "map"):
        features = [0, channels // 2]
        ours = net.project(x, layer, features=features, mode=mode)
        expected = oracle_project(model, x, layer, features, mode)
        assert rel_error(ours, expected) <= TOLERANCE, mode
        assert expected.abs().max() > 0
    assert_untouched(model, before)


class Thresholded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.head(x * x.argsort(1)[:, :1] + x * x.argmax(1, keepdim=True))


def test_refusals_name_the_real_blockers():
    # SiLU, GELU, LayerNorm and gates now have rules (tests/test_modern_cnns.py); what autograd
    # cannot differentiate is still refused, every blocker named at once.
    with pytest.raises(dv.UnsupportedOpError) as info:
        dv.Deconvnet(Thresholded().eval()).reverse_pass("head")
    message = str(info.value)
    assert all(name in message for name in ["argsort", "argmax"]), message
