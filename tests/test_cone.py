import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, zoo_model
from oracle import oracle_project, rel_error
from torch import nn

import deconvviz as dv
from deconvviz.engine.passes.cone import plan_cone

TOLERANCE = 1e-4  # relative max error between the cone and the full-size pass


def _plan(net, x, layer, cheaper=True):
    rec = net.record(x, layer)
    steps = net.reverse_pass(layer)
    return plan_cone(net.traced, steps.ops, steps.folded, net.method, rec, net.layer(layer).node,
                     require_cheaper=cheaper), rec


def _cone_layers(net, x):
    """The shallowest and a middle alias whose projections go through the cone."""
    usable = [a for a in net.aliases if _plan(net, x, a)[0] is not None]
    return [usable[0], usable[len(usable) // 2]]


@pytest.mark.agreement
@pytest.mark.parametrize("name", FAMILIES)
def test_cone_equals_the_full_size_pass_on_every_zoo_family(name):
    net = dv.Deconvnet(zoo_model(name))
    x = torch.randn(2, 3, 128, 128)
    for layer in _cone_layers(net, x):
        channels = net.record(x, layer).activations[layer].shape[1]
        features = [0, channels // 2, channels - 1]
        cone = net.project(x, layer, features=features, cone=True)
        full = net.project(x, layer, features=features, cone=False)
        assert rel_error(cone, full) <= TOLERANCE, (name, layer)
        assert full.abs().max() > 0


@pytest.mark.agreement
@pytest.mark.parametrize("name", ["zfnet", "alexnet"])
@pytest.mark.parametrize("size", [227, 231])
def test_cone_on_odd_input_sizes(name, size):
    net = dv.Deconvnet(zoo_model(name))
    x = torch.randn(1, 3, size, size)
    cone = net.project(x, "conv3", features=list(range(0, 384, 40)), cone=True)
    assert cone.shape[-2:] == (size, size)
    assert rel_error(cone, net.project(x, "conv3", features=list(range(0, 384, 40)), cone=False)) <= TOLERANCE


@pytest.mark.agreement
def test_seeds_at_the_borders_and_corners():
    model = zoo_model("vgg16")
    net = dv.Deconvnet(model)
    x = torch.randn(2, 3, 96, 96)
    plan, rec = _plan(net, x, "conv3_3")
    act = rec.activations["conv3_3"]
    h, w = act.shape[-2:]
    spots = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h // 2, 0), (5, 7)]
    images = torch.tensor([i % 2 for i in range(len(spots))])
    features = torch.tensor([3 * i for i in range(len(spots))])
    ys, xs = torch.tensor([s[0] for s in spots]), torch.tensor([s[1] for s in spots])
    values = torch.rand(len(spots)) + 0.5
    ours = plan.project(images, features, ys, xs, values)
    for i in range(len(spots)):
        seed = torch.zeros_like(act)
        seed[images[i], features[i], ys[i], xs[i]] = values[i]
        full = net.project(x, "conv3_3", signal=seed, cone=False)[images[i]]
        assert rel_error(ours[i], full) <= TOLERANCE, spots[i]
        assert full.abs().max() > 0


class Odd(nn.Module):
    """Padding 'same', dilation, groups, a padded ceil-mode pool, an average pool and a
    residual branch with a strided 1x1 shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, padding="same")
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(2)
        self.main = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.short = nn.Conv2d(8, 16, 1, stride=2)
        self.bn = nn.BatchNorm2d(16).eval()

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.pool(torch.relu(self.dil(x)))
        x = self.avg(x)
        return F.relu(self.bn(self.main(x)) + self.short(x))


@pytest.mark.agreement
def test_cone_on_unusual_ops_matches_full_and_oracle():
    torch.manual_seed(1)
    model = Odd().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    net = dv.Deconvnet(model)
    x = torch.randn(2, 3, 45, 45)
    plan, _ = _plan(net, x, "", cheaper=False)
    assert plan is not None
    cone = net.project(x, "", features=list(range(16)), cone=True)
    assert rel_error(cone, net.project(x, "", features=list(range(16)), cone=False)) <= TOLERANCE
    assert rel_error(cone, oracle_project(model, x, "", list(range(16)))) <= TOLERANCE


def test_layers_whose_cone_is_the_whole_image_use_the_full_pass():
    net = dv.Deconvnet(zoo_model("zfnet"))
    x = torch.randn(1, 3, 224, 224)
    assert _plan(net, x, "fc6", cheaper=False)[0] is None
    assert _plan(net, x, "conv3")[0] is not None


@pytest.mark.agreement
def test_small_memory_budget_gives_the_same_result():
    model = zoo_model("zfnet")
    x = torch.randn(1, 3, 224, 224)
    features = list(range(0, 384, 12))
    whole = dv.Deconvnet(model).project(x, "conv3", features=features)
    tiny = dv.Deconvnet(model, max_memory=1).project(x, "conv3", features=features)
    # One seed per chunk: convolutions of another batch size may differ in the last bits.
    assert rel_error(tiny, whole) <= 1e-6


@pytest.mark.agreement
@pytest.mark.parametrize("layer", ["conv2", "fc7"])  # through the cone, and the full pass
def test_project_units_equals_single_seeds(layer):
    net = dv.Deconvnet(zoo_model("zfnet"))
    x = torch.randn(2, 3, 224, 224)
    act = net.record(x, layer).activations[layer]
    units = [(1, 5, 3, 20), (0, 7, 0, 0), (1, 200, 25, 25)] if act.dim() == 4 else \
        [(1, 5, 0, 0), (0, 7, 0, 0)]
    out = net.project_units(x, layer, positions=units)
    for i, (n, f, y, xx) in enumerate(units):
        seed = torch.zeros_like(act)
        index = (n, f, y, xx) if act.dim() == 4 else (n, f)
        seed[index] = act[index]
        assert rel_error(out[i], net.project(x, layer, signal=seed, cone=False)[n]) <= TOLERANCE
    with pytest.raises(dv.ArgumentError, match="outside layer"):
        net.project_units(x, layer, positions=[(2, 0, 0, 0)])
