"""LRP on the engine, held to an independent float64 oracle written from the rules' formulas
(tests/lrp_oracle.py) on every zoo model and the five modern CNNs, to zennit 0.5.1 on VGG16
and ResNet-50, and to conservation (biases zero, epsilon -> 0) on every zoo model."""
import copy
from dataclasses import replace

import pytest
import torch
from conftest import ALL_MODELS, assert_untouched, snapshot, zoo_model
from lrp_oracle import oracle_lrp, without_biases
from test_modern_cnns import MODERN, modern
from torch import nn

import deconvviz as dv
from deconvviz.engine.catalogue.lrp import COMPOSITES, RULE_METHODS, Composite, relevance_method
from deconvviz.engine.catalogue.methods import METHODS
from deconvviz.engine.precision import rel_error

ORACLE_TOLERANCE = 1e-9  # float64 on both sides: the same sums in a different order
ZENNIT_TOLERANCE = 1e-5  # float32, relative to the largest value (the bound)
CONSERVATION = 1e-5
# The smallest inputs each zoo family runs on (one pixel left at its deepest map).
SIZE = {"zfnet": 64, "alexnet": 64, "googlenet": 32}


def _spec(c):
    spec = dict(first=c.first, conv=c.conv, linear=c.linear, epsilon=c.epsilon,
                stabilizer=c.stabilizer, gamma=c.gamma)
    return spec


def _double_with_random_batchnorms(model, seed=3):
    """A float64 copy whose BatchNorms do something (random scale, shift and statistics), so
    that folding them is tested."""
    model = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


_rel = rel_error  # max |a - b| / max |b|


def _logit_seed(net, x):
    rec = net.record(x, "")
    out = rec.activations[""]
    seed = torch.zeros_like(out)
    rows = torch.arange(x.shape[0])
    top = out.argmax(1)
    seed[rows, top] = out[rows, top]
    return rec, seed, out[rows, top]


# epsilon -> 0: relevance is conserved up to what rounding loses
TINY = Composite("lrp_tiny", "LRP (epsilon 1e-30)", epsilon=1e-30, stabilizer=1e-30)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_lrp_equals_the_oracle_and_conserves_on_every_zoo_model(name):
    """One float64 pass each, with every bias (BatchNorm's shift included) zero and epsilon
    -> 0, so that the same pass is checked against the oracle and for conservation: the input
    relevance sums to the seeded logit. Local response normalisation (ZFNet, AlexNet,
    GoogLeNet) passes relevance through, as the deconvnet does: that keeps its sum, so these
    models conserve too (zennit takes LRN's gradient, which does not: 0.35 on ZFNet). The
    biases and the default epsilon are held to the oracle on ResNet-18, the modern CNNs and
    zennit below."""
    model = without_biases(_double_with_random_batchnorms(zoo_model(name)))
    size = SIZE.get(name.rstrip("0123456789"), 32)
    x = torch.randn(1, 3, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    net = dv.Projector(model, method=relevance_method(TINY))
    rec, seed, logit = _logit_seed(net, x)
    ours = net.project(x, "", signal=seed, recording=rec)
    oracle = oracle_lrp(model, x, _spec(TINY))
    assert oracle.abs().max() > 0
    assert _rel(ours, oracle) <= ORACLE_TOLERANCE, name
    assert abs(float(ours.sum() / logit.sum()) - 1) <= CONSERVATION, name


@pytest.mark.parametrize("name", list(MODERN))
def test_lrp_equals_the_oracle_on_the_modern_cnns(name):
    model = copy.deepcopy(modern(name)).double()
    before = snapshot(model)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    ours = dv.attribute(model, x, method="lrp").map
    oracle = oracle_lrp(model, x, _spec(COMPOSITES[0]))
    assert oracle.abs().max() > 0
    assert _rel(ours, oracle) <= ORACLE_TOLERANCE, name
    assert_untouched(model, before)


class _Tiny(nn.Module):
    """Every op kind of a residual CNN, small: convolution + BatchNorm, max-pool, residual
    addition, average pool, linear layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.block = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 10),
                                  nn.ReLU(), nn.Linear(10, 5))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


BOUNDS = dict(low=(-2.0, -1.5, -1.8), high=(2.2, 2.4, 2.6))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = _double_with_random_batchnorms(_Tiny())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.2)
    return model


ALL_COMPOSITES = [replace(c, **BOUNDS) for c in [*COMPOSITES, *RULE_METHODS]]


def _tiny_lrp(model, x, composite):
    net = dv.Projector(model, method=relevance_method(composite))
    rec, seed, _ = _logit_seed(net, x)
    return net.project(x, "", signal=seed, recording=rec)


@pytest.mark.parametrize("composite", ALL_COMPOSITES, ids=lambda c: c.name)
def test_every_rule_and_composite_equals_the_oracle(composite, tiny):
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    ours = _tiny_lrp(tiny, x, composite)
    spec = _spec(composite)
    spec.update({k: torch.tensor(v, dtype=x.dtype).reshape(1, -1, 1, 1)
                 for k, v in BOUNDS.items()})
    oracle = oracle_lrp(tiny, x, spec)
    assert oracle.abs().max() > 0
    assert _rel(ours, oracle) <= ORACLE_TOLERANCE


def test_the_rules_differ(tiny):
    """The oracle test could tell the rules apart (no two methods give the same map)."""
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    maps = {c.name: _tiny_lrp(tiny, x, c) for c in ALL_COMPOSITES}
    names = [n for n in maps if n != "lrp_alpha1beta0"]  # alpha=1 beta=0 is z+ by definition
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert _rel(maps[a], maps[b]) > 1e-3, (a, b)
    assert _rel(maps["lrp_alpha1beta0"], maps["lrp_zplus"]) < 1e-12


def test_zbox_takes_a_zoo_models_bounds():
    model = zoo_model("zfnet")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(dv.ArgumentError, match="low=..., high="):
        dv.attribute(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), x[:, :, :4, :4],
                     method="lrp_zbox", target=0)
    assert dv.attribute(model, x, method="lrp_zbox").map.abs().sum() > 0


@pytest.mark.parametrize("name, canonizer", [("vgg16", "VGGCanonizer"),
                                             ("resnet50", "ResNetCanonizer")])
def test_lrp_equals_zennit(name, canonizer):
    """zennit 0.5.1's EpsilonPlusFlat with its canonizer. zennit merges a BatchNorm into the
    convolution and leaves it with mean 0, variance 1 and *its eps*: each merged BatchNorm
    then still divides by sqrt(1 + eps), which shrinks ResNet-50's relevance by 1.7e-4. The
    BatchNorms' eps is 0 here, so that both compute the same function."""
    pytest.importorskip("zennit")
    from zennit import torchvision as ztv
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    model = copy.deepcopy(zoo_model(name)).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 0.0
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = dv.attribute(model, x, method="lrp").map
    with torch.no_grad():
        out = model(x)
    seed = torch.zeros_like(out)
    top = int(out.argmax())
    seed[0, top] = out[0, top]
    composite = EpsilonPlusFlat(canonizers=[getattr(ztv, canonizer)()])
    with Gradient(model=model, composite=composite) as attributor:
        _, theirs = attributor(x, seed)
    assert _rel(ours, theirs) <= ZENNIT_TOLERANCE


class _BatchNormBeforeConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 5, 3, padding=1, bias=True)
        self.lone = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 6 * 6, 3)

    def forward(self, x):
        x = torch.relu(self.conv0(x))
        x = self.conv(self.bn(x))  # folded before the convolution (padding 1: a bias map)
        x = self.lone(torch.relu(x))  # no convolution next to it: the epsilon rule
        return self.fc(x.flatten(1))


def test_batchnorm_folds_into_the_convolution_after_it_and_a_lone_one_is_epsilon():
    torch.manual_seed(0)
    model = _BatchNormBeforeConv().double().eval()
    with torch.no_grad():
        for bn in (model.bn, model.lone):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    ours = dv.attribute(model, x, method="lrp_epsilon").map
    # By hand: conv(bn(.)) is one affine map A; the epsilon rule on A is x * A^T(R / A(x)).
    e = 1e-6
    stab = lambda z: z + e * ((z == 0).double() + z.sign())  # noqa: E731
    with torch.no_grad():
        h0 = model.conv0(x)
        h = torch.relu(h0)
        z = model.conv(model.bn(h))
        lone_in = torch.relu(z)
        y = model.lone(lone_in)
        out = model.fc(y.flatten(1))
    top = int(out.argmax())
    r_out = torch.zeros_like(out)
    r_out[0, top] = out[0, top]
    r_y = (y.flatten(1) * ((r_out / stab(out)) @ model.fc.weight)).reshape(y.shape)
    scale = (model.lone.weight / torch.sqrt(model.lone.running_var + model.lone.eps))
    r_z = lone_in * scale.reshape(1, -1, 1, 1) * r_y / stab(y)  # the lone BatchNorm, ReLU

    def through(fn, inp, r):
        leaf = inp.clone().requires_grad_(True)
        with torch.enable_grad():
            zz = fn(leaf)
            (grad,) = torch.autograd.grad(zz, leaf, r / stab(zz.detach()))
        return inp * grad

    r_h = through(lambda t: model.conv(model.bn(t)), h, r_z)
    r_x = through(model.conv0, x, r_h)
    assert _rel(ours, r_x) <= ORACLE_TOLERANCE


def test_methods_listed_and_composites_are_data():
    names = dv.list_methods("reverse pass")
    for c in [*COMPOSITES, *RULE_METHODS]:
        assert c.name in names and METHODS[c.name].relevance
    assert "lrp" in dv.list_methods()
    with pytest.raises(dv.ArgumentError, match="choose one of epsilon, zplus"):
        Composite("bad", "bad", conv="zplu")
    with pytest.raises(dv.ArgumentError, match="first='zbox'"):
        Composite("bad", "bad", conv="zbox")
    mine = Composite("lrp_mine", "LRP mine", first="wsquare", conv="gamma", gamma=0.5)
    dv.register_method(relevance_method(mine))
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
        x = torch.randn(1, 3, 4, 4)
        assert dv.attribute(model, x, method="lrp_mine").map.shape == (1, 3, 4, 4)
        assert "lrp_mine" in dv.list_methods()
    finally:
        dv.unregister_method("lrp_mine")
