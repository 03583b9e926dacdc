"""LRP complete for what people write (issue 36, item 1): every pointwise activation passes
relevance through (as zennit's and Captum's pass rule), LayerNorm, GroupNorm and RMSNorm take
AttnLRP's rule (the standard deviation a constant), an attention's softmax is a constant
(Ali et al. 2022), so that nets of each activation, ConvNeXt-T and Swin-T conserve relevance
(biases zero, ε -> 0); composites map layers to rules by name or type; 1-D and 3-D
convolutions and max-pools take the rules of 2-D ones."""

import pytest
import torch
import torchvision
from lrp_oracle import without_biases
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.rules import Epsilon, Pass
from zennit.types import Activation, Convolution, Linear

import deconvviz as dv
from deconvviz.engine import rule_table
from deconvviz.engine.catalogue.lrp import Composite, relevance_method
from deconvviz.engine.catalogue.methods import METHODS
from deconvviz.engine.precision import rel_error
from deconvviz.errors import ArgumentError, UnsupportedOpError

CONSERVATION = 1e-6  # |input relevance / logit - 1|, float64
ZENNIT = 1e-9  # relative max error, float64 on both sides
TINY = Composite("lrp_tiny", "LRP ε -> 0", first=None, conv="epsilon", linear="epsilon",
                 epsilon=1e-30, stabilizer=1e-30)
ACTIVATIONS = {
    "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "Softplus": nn.Softplus, "SELU": nn.SELU,
    "CELU": nn.CELU, "ELU": nn.ELU, "Hardsigmoid": nn.Hardsigmoid, "Hardtanh": nn.Hardtanh,
    "Softsign": nn.Softsign, "SiLU": nn.SiLU, "GELU": nn.GELU, "Hardswish": nn.Hardswish,
    "Mish": nn.Mish, "LeakyReLU": nn.LeakyReLU, "ReLU6": nn.ReLU6, "LogSigmoid": nn.LogSigmoid,
    "Tanhshrink": nn.Tanhshrink, "Softshrink": lambda: nn.Softshrink(0.01), "PReLU": nn.PReLU,
    "Hardtanh(-2, 3)": lambda: nn.Hardtanh(-2.0, 3.0),
}


def _relevance(model, x, composite=TINY):
    """Input relevance of each image's top class, seeded with its logit; and the logits."""
    net = dv.Projector(model, method=relevance_method(composite))
    rec = net.record(x, "")
    out = rec.activations[""]
    rows, top = torch.arange(x.shape[0]), out.argmax(1)
    seed = torch.zeros_like(out)
    seed[rows, top] = out[rows, top]
    return net.project(x, "", signal=seed, recording=rec), seed


def _conserves(model, x):
    relevance, seed = _relevance(model, x)
    ratio = relevance.flatten(1).sum(1) / seed.sum(1)
    assert (ratio - 1).abs().max() <= CONSERVATION, ratio.tolist()


def _activation_net(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act(), nn.Conv2d(8, 8, 3, padding=1),
                        act(), nn.Flatten(), nn.Linear(8 * 64, 16), act(), nn.Linear(16, 10))
    return without_biases(net.double().eval())


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_passes_relevance_through_and_conserves(name):
    model = _activation_net(ACTIVATIONS[name])
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _conserves(model, x)
    if isinstance(model[1], tuple(Activation.__subclass__)):  # zennit's pass rule: equal
        ours, seed = _relevance(model, x, Composite("lrp_e", "LRP ε", first=None,
                                                    conv="epsilon", linear="epsilon"))
        rule_map = [(Activation, Pass()), (Convolution, Epsilon(1e-6)),
                    (Linear, Epsilon(1e-6))]
        leaf = x.clone().requires_grad_(True)
        with LayerMapComposite(rule_map).context(model) as modified:
            (theirs,) = torch.autograd.grad(modified(leaf), leaf, seed)
        assert rel_error(ours, theirs) <= ZENNIT, name


def test_the_rule_tables_state_the_pass_rule_and_the_norm_rule():
    table = rule_table([METHODS["gradient"], METHODS["lrp"]])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "Tanh" in rows["`pointwise`"] and "passes through unchanged" in rows["`pointwise`"]
    assert "vector-Jacobian product" in rows["`pointwise`"]  # the gradient keeps f'(x)
    assert "LayerNorm" in rows["`norm`"] and "AttnLRP" in rows["`norm`"]
    with open("docs/deconvnet.md") as handle:
        assert rows["`pointwise`"] .split("|")[2] in handle.read()


@pytest.mark.parametrize("name", ["convnext_tiny", "swin_t"])
def test_convnext_and_swin_conserve(name):
    torch.manual_seed(0)
    model = without_biases(getattr(torchvision.models, name)().double().eval())
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _conserves(model, x)


class Norms(nn.Module):
    """GroupNorm, a LayerNorm over channels (channels last), RMSNorm and their functions."""

    def __init__(self, which):
        super().__init__()
        self.which = which
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
        self.gn, self.ln, self.rms = nn.GroupNorm(2, 8), nn.LayerNorm(8), nn.RMSNorm(8)
        for norm in (self.gn, self.ln, self.rms):
            nn.init.uniform_(norm.weight, 0.5, 1.5)
        self.fc = nn.Linear(4 * 64, 5)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        last = x.permute(0, 2, 3, 1)
        x = {"GroupNorm": lambda: self.gn(x),
             "LayerNorm": lambda: self.ln(last).permute(0, 3, 1, 2),
             "RMSNorm": lambda: self.rms(last).permute(0, 3, 1, 2),
             "group_norm": lambda: nn.functional.group_norm(x, 4, eps=1e-3),
             "layer_norm": lambda: nn.functional.layer_norm(last, (8,)).permute(0, 3, 1, 2)
             }[self.which]()
        return self.fc(torch.relu(self.c2(x)).flatten(1))


@pytest.mark.parametrize("which", ["GroupNorm", "LayerNorm", "RMSNorm", "group_norm",
                                   "layer_norm"])
def test_normalisations_conserve_with_the_std_a_constant(which):
    model = without_biases(Norms(which).double().eval())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert {"norm"} <= {op.kind for op in dv.Projector(model).traced.ops.values()}
    _conserves(model, x)


def test_the_norm_rule_is_the_epsilon_rule_on_the_map_with_the_std_held():
    torch.manual_seed(3)
    model = nn.Sequential(nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 9, 3)).double().eval()
    nn.init.uniform_(model[0].weight, 0.5, 1.5)
    nn.init.normal_(model[0].bias)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    ours, seed = _relevance(model, x)
    # by hand: the linear layer's ε rule, then x * Jᵀ(R / y) of the map with std fixed
    gn, fc = model[0], model[2]
    xg = x.reshape(1, 2, -1)
    std = (xg.var(-1, unbiased=False, keepdim=True) + gn.eps).sqrt()

    def held(t):
        tg = t.reshape(1, 2, -1)
        y = ((tg - tg.mean(-1, keepdim=True)) / std).reshape(t.shape)
        return y * gn.weight.reshape(1, -1, 1, 1) + gn.bias.reshape(1, -1, 1, 1)
    y = held(x).flatten(1)
    r_y = y * (fc.weight.T @ (seed / (y @ fc.weight.T + fc.bias)).T).T
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(held(leaf), leaf, (r_y / y).reshape(x.shape))
    assert rel_error(ours, g * x) <= 1e-9


class Attention(nn.Module):
    """One head of self-attention over the pixels, written out (matmul, softmax, matmul)."""

    def __init__(self):
        super().__init__()
        self.conv, self.qkv = nn.Conv2d(3, 8, 2, stride=2), nn.Linear(8, 24)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)  # [N, L, 8]
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1)
        return self.fc((attention @ v + t).mean(1))


def test_attention_conserves_its_softmax_a_constant():
    """A traced attention (matmul, softmax, matmul). nn.MultiheadAttention (one op, its
    attention written out with the softmax held) conserves too: tests/test_attnlrp.py."""
    torch.manual_seed(4)
    model = without_biases(Attention().double().eval())
    _conserves(model, torch.randn(2, 3, 8, 8, dtype=torch.float64))


# -- composites by name and type; the identity rule; 1-D and 3-D convolutions -------------
def _mlp():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    return model.double().eval()


def test_a_composite_maps_layers_by_name_and_by_type():
    model, x = _mlp(), torch.rand(2, 3, 2, 2, dtype=torch.float64)
    by_name = Composite("n", "n", first=None, conv="epsilon", linear="epsilon",
                        by_name={"[13]": ("gamma", {"gamma": 1.0})})
    by_type = Composite("t", "t", first=None, conv="epsilon", linear="epsilon",
                        by_type={"Linear": ("gamma", {"gamma": 1.0})},
                        by_name={"5": "epsilon"})  # a name comes before a type
    assert torch.equal(_relevance(model, x, by_name)[0], _relevance(model, x, by_type)[0])
    everywhere = Composite("g", "g", first=None, conv="gamma", linear="gamma", gamma=1.0)
    assert not torch.equal(_relevance(model, x, by_name)[0],
                           _relevance(model, x, everywhere)[0])


def test_the_identity_rule_passes_relevance_and_refuses_a_change_of_size():
    """On a layer whose weight is the identity matrix (no bias) the ε rule (ε -> 0) passes
    relevance through unchanged: the identity rule must give the same map."""
    model, x = _mlp(), torch.rand(2, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        model[3].weight.copy_(torch.eye(6))
        model[3].bias.zero_()
    ident = Composite("i", "i", first=None, conv="epsilon", linear="epsilon",
                      epsilon=1e-30, stabilizer=1e-30, by_name={"3": "identity"})
    ours, _ = _relevance(model, x, ident)
    assert rel_error(ours, _relevance(model, x)[0]) <= 1e-12
    bad = Composite("b", "b", first=None, conv="epsilon", linear="epsilon",
                    by_name={"1": "identity"})
    with pytest.raises(UnsupportedOpError, match=r"identity rule.*Linear\(12, 6\) at 1"):
        _relevance(model, x, bad)


def test_a_composite_names_only_rules_and_their_parameters():
    with pytest.raises(ArgumentError, match="unknown LRP rule 'gama'"):
        Composite("x", "x", by_name={"fc": "gama"})
    with pytest.raises(ArgumentError, match="unknown parameter"):
        Composite("x", "x", by_type={"Linear": ("gamma", {"gammma": 1.0})})


class Conv1dNet(nn.Module):
    """Convolutions over a sequence: the image's rows end to end."""

    def __init__(self, two_d=False):
        super().__init__()
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
        k = (1, 3) if two_d else 3
        self.two_d = two_d
        self.c1, self.c2 = conv(3, 4, k, padding=(0, 1) if two_d else 1), conv(4, 4, k)
        self.pool, self.fc = pool((1, 2) if two_d else 2), nn.Linear(4 * 7, 5)

    def forward(self, x):
        t = x.reshape(x.shape[0], 3, 1, -1) if self.two_d else x.reshape(x.shape[0], 3, -1)
        return self.fc(self.pool(torch.relu(self.c2(torch.relu(self.c1(t))))).flatten(1))


@pytest.mark.parametrize("method", ["lrp", "lrp_zplus", "lrp_epsilon_alpha2beta1_flat"])
def test_1d_convolutions_and_pools_take_the_2d_rules(method):
    torch.manual_seed(6)
    one = Conv1dNet().double().eval()
    two = Conv1dNet(two_d=True).double().eval()
    with torch.no_grad():
        for a, b in ((one.c1, two.c1), (one.c2, two.c2)):
            b.weight.copy_(a.weight[:, :, None])
            b.bias.copy_(a.bias)
        two.fc.load_state_dict(one.fc.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    ours = dv.attribute(one, x, method=method, target=1).map
    expected = dv.attribute(two, x, method=method, target=1).map
    assert rel_error(ours, expected) <= 1e-12


def test_3d_convolutions_conserve():
    torch.manual_seed(7)

    class Net3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.pool = nn.Conv3d(1, 4, 3, padding=1), nn.MaxPool3d(2)
            self.fc = nn.Linear(4 * 8, 5)

        def forward(self, x):
            t = x.reshape(x.shape[0], 1, 4, 4, -1)
            return self.fc(self.pool(torch.relu(self.c(t))).flatten(1))
    _conserves(without_biases(Net3d().double().eval()),
               torch.randn(2, 1, 4, 16, dtype=torch.float64))
