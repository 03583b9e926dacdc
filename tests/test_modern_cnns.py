"""Today's CNNs (SiLU, GELU, Hardswish, LayerNorm, squeeze-excitation) under every
reverse-pass method, held to an independent autograd oracle (tests/modern_oracle.py) to 1e-4
relative: torchvision's EfficientNet-B0, MobileNetV3-Large, ConvNeXt-Tiny, RegNetY-400MF and
MobileNetV2 with random weights, two layers each, both modes."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_untouched, snapshot
from modern_oracle import modern_oracle
from oracle import rel_error
from torch import nn
from torchvision import models

import deconvviz as dv
from deconvviz.engine.passes.cone import plan_cone

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
                ours = net.project(x, layer, features=features, mode=mode)
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


class Functional(nn.Module):
    """Every activation in its functional form, a squeeze-excitation written by hand (the gate
    reshaped before the product), a LayerNorm over channels, a channel split and a division."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.c3 = nn.Conv2d(4, 6, 3)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.elu(x) + F.mish(x) + F.gelu(x, approximate="tanh") + F.hardswish(x)
        x = F.silu(self.c2(x))
        n, c = x.shape[:2]
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        x = x * gate.view(n, c, 1, 1)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        a, b = x.chunk(2, dim=1)
        return self.c3(F.gelu(a) / (1 + b.abs()))


@pytest.mark.parametrize("method", METHODS)
def test_functional_forms_gates_and_other_ops(method):
    torch.manual_seed(0)
    model = Functional().eval()
    before = snapshot(model)
    x = torch.randn(2, 3, 12, 12)
    net = dv.Projector(model, method=method)
    text = str(net.reverse_pass("c3"))
    assert "vector-Jacobian product" in text  # LayerNorm, permute, chunk, abs, division
    for mode in ("max", "map"):
        ours = net.project(x, "c3", features=[0, 5], mode=mode)
        expected = modern_oracle(model, x, "c3", [0, 5], mode, method)
        assert expected.abs().max() > 0
        assert rel_error(ours, expected) <= TOLERANCE, mode
    assert_untouched(model, before)


@pytest.mark.agreement
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large", "regnet_y_400mf"])
def test_the_cone_stays_local_through_gates(name):
    model = modern(name)
    layer, size = MODERN[name][1][0], MODERN[name][2]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    for method in ("deconvnet", "guided"):  # the gate is a recorded constant
        net = dv.Projector(model, method=method)
        steps = net.reverse_pass(layer)
        assert "projected in their cone" in str(steps)
        plan = plan_cone(net.traced, steps.ops, steps.folded, net.method, net.record(x, layer),
                         steps.ops[0].name, require_cheaper=False)
        assert plan is not None  # the cone runs (not the full-size pass again)
        features = list(range(0, 24, 3))
        cone = net.project(x, layer, features=features, cone=True)
        full = net.project(x, layer, features=features, cone=False)
        assert rel_error(cone, full) <= TOLERANCE, method
    # The gradient runs into the gate's branch, a global pool: the whole image, said so.
    gradient = dv.Gradient(model)
    assert "Receptive-field cone: not used" in str(gradient.reverse_pass(layer))
    assert torch.equal(gradient.project(x, layer, features=3, cone=True),
                       gradient.project(x, layer, features=3, cone=False))


class Branching(nn.Module):
    def forward(self, x):
        return F.silu(x) if x.sum() > 0 else x


def test_what_autograd_cannot_do_is_still_refused():
    with pytest.raises(dv.UnsupportedOpError, match=r"cannot capture the forward of Branching "
                                                    r"at test_modern_cnns.py:\d+: torch.fx.*"
                                                    r"torch.export.*branches on tensor values"):
        dv.Gradient(Branching())
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU())
    bare = dv.engine.RuleSet("bare", "bare method")  # no fallback, no activation rule
    with pytest.raises(dv.UnsupportedOpError, match="no bare method rule for SiLU at 1"):
        dv.Projector(model, method=bare).reverse_pass("1")


class Product(nn.Module):
    """A product of two signals, neither a gate: both factors, in every method."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.c = nn.Conv2d(6, 4, 3, stride=2)

    def forward(self, x):
        x = F.silu(self.a(x))
        return self.c(x * F.gelu(self.b(x)))


@pytest.mark.agreement
@pytest.mark.parametrize("method", METHODS)
def test_a_product_of_two_signals_in_the_cone(method):
    torch.manual_seed(0)
    model = Product().eval()
    x = torch.randn(2, 3, 24, 24)
    net = dv.Projector(model, method=method)
    steps = net.reverse_pass("c")
    assert plan_cone(net.traced, steps.ops, steps.folded, net.method, net.record(x, "c"),
                     steps.ops[0].name, require_cheaper=False) is not None
    cone = net.project(x, "c", features=[0, 1, 2], cone=True)
    assert rel_error(cone, net.project(x, "c", features=[0, 1, 2], cone=False)) <= TOLERANCE
    assert rel_error(cone, modern_oracle(model, x, "c", [0, 1, 2], "max", method)) <= TOLERANCE


class Rounded(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.b(self.a(x).to(torch.int64).float())  # no gradient through a cast


@pytest.mark.parametrize("method", METHODS)
def test_an_op_autograd_cannot_differentiate_refuses_when_it_runs(method):
    model = Rounded().eval()
    before = snapshot(model)
    with pytest.raises(dv.UnsupportedOpError, match=r"no .* rule for Tensor.to at .*Rounded"
                                                    r".*autograd cannot differentiate it"):
        dv.Projector(model, method=method).project(torch.randn(1, 3, 9, 9), "b", features=0)
    assert_untouched(model, before)


@pytest.mark.agreement
@pytest.mark.parametrize("method", METHODS)
def test_the_cone_follows_channels_last_maps(method):
    # ConvNeXt permutes each block's map to [N, H, W, C] for LayerNorm and its MLP, which act
    # per position: the cone follows them in every method (the model has no gates).
    model = modern("convnext_tiny")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    layer, features = "features.3", [0, 5, 17]
    net = dv.Projector(model, method=method)
    steps = net.reverse_pass(layer)
    assert "projected in their cone" in str(steps)
    assert plan_cone(net.traced, steps.ops, steps.folded, net.method, net.record(x, layer),
                     steps.ops[0].name, require_cheaper=False) is not None
    cone = net.project(x, layer, features=features, cone=True)
    assert rel_error(cone, net.project(x, layer, features=features, cone=False)) <= TOLERANCE
    assert rel_error(cone, modern_oracle(model, x, layer, features, "max", method)) <= TOLERANCE
