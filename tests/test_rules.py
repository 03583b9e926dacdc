"""One test per registered op rule: its reverse step against autograd's vector-Jacobian
product of the op (for ReLU and LRN, the deconvnet's own rules, as the method defines them).

A rule registered without a case here fails ``test_every_rule_has_a_case``.
"""
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvviz as dv
from deconvviz.engine import DECONVNET, Rule, RuleSet, register_rule, registered_rules
from deconvviz.engine.precision import rel_error

TOLERANCE = 1e-6  # relative max error against autograd, float32




class Fn(nn.Module):
    """A module whose forward is one expression, with optional submodules and buffers."""

    def __init__(self, forward, **children):
        super().__init__()
        for name, child in children.items():
            if isinstance(child, torch.Tensor):
                self.register_buffer(name, child)
            else:
                setattr(self, name, child)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def _bn():
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.running_mean.normal_()
        bn.weight.normal_()
    return bn


def _deconvnet_relu(x, s):
    return F.relu(s)


def _pass_through(x, s):
    return s


# kind -> (model, the deconvnet's expected reverse, or None for autograd's vjp)
CASES = {
    "relu": [(nn.Sequential(nn.ReLU()), _deconvnet_relu),
             (Fn(lambda m, x: F.relu(x)), _deconvnet_relu),
             (Fn(lambda m, x: x.relu()), _deconvnet_relu)],
    "relu6": [(nn.Sequential(nn.ReLU6()), _deconvnet_relu),
              (Fn(lambda m, x: F.hardtanh(x * 4, 0.0, 6.0)), lambda x, s: 4 * F.relu(s))],
    "maxpool": [(nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1)), None),
                (Fn(lambda m, x: F.max_pool2d(x, 2, 1, ceil_mode=True)), None)],
    "conv": [(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), None),
             (nn.Sequential(nn.Conv2d(3, 6, 3, padding="same", dilation=2, groups=3)), None),
             (nn.Sequential(nn.Conv2d(3, 4, 4, stride=3)), None)],
    "linear": [(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)), None)],
    "batchnorm": [(nn.Sequential(_bn()), None)],
    "identity": [(nn.Sequential(nn.Dropout(0.5).eval()), None),
                 (Fn(lambda m, x: x.contiguous()), None)],
    "lrn": [(nn.Sequential(nn.LocalResponseNorm(3)), _pass_through)],
    "avgpool": [(nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)), None),
                (Fn(lambda m, x: F.avg_pool2d(x, 2)), None)],
    "adaptive_avgpool": [(nn.Sequential(nn.AdaptiveAvgPool2d(3)), None)],
    "transpose": [(Fn(lambda m, x: F.pad(x, (1, 2, 0, 1))), None),
                  (Fn(lambda m, x: x[:, :, 1:-1, ::2]), None),
                  (Fn(lambda m, x: x.mean(dim=(2, 3))), None)],
    "reshape": [(Fn(lambda m, x: torch.flatten(x, 1)), None),
                (Fn(lambda m, x: x.view(2, 3, 64).unsqueeze(1)), None)],
    "cat": [(Fn(lambda m, x: torch.cat([x, x[:, :2]], dim=1)), None)],
    "add": [(Fn(lambda m, x: x + x - 0.5), None),
            (Fn(lambda m, x: torch.add(x, x, alpha=2)), None),
            (Fn(lambda m, x: x.sub(x.mean(dim=1, keepdim=True))), None)],
    "scale": [(Fn(lambda m, x: x * 3.0 / 2), None),
              (Fn(lambda m, x: -x), None),
              (Fn(lambda m, x: x * m.w, w=torch.tensor([0.5, -2.0, 3.0]).reshape(1, 3, 1, 1)),
               None)],
    "activation": [(nn.Sequential(nn.SiLU()), _deconvnet_relu),
                   (Fn(lambda m, x: F.gelu(x, approximate="tanh")), _deconvnet_relu),
                   (Fn(lambda m, x: F.leaky_relu(x, 0.2)), _deconvnet_relu)],
    # the other pointwise functions and the normalisations: their derivative (LRP differs)
    "pointwise": [(nn.Sequential(nn.Tanh()), None), (Fn(lambda m, x: x.sigmoid()), None),
                  (Fn(lambda m, x: F.hardtanh(x, -0.5, 0.5)), None)],
    "norm": [(nn.Sequential(nn.GroupNorm(3, 3)), None),
             (Fn(lambda m, x: F.layer_norm(x, (8,))), None)],
    # a gate is the recorded constant it is for the image; a product without one, both factors
    "product": [(Fn(lambda m, x: x * torch.sigmoid(x.mean((2, 3), keepdim=True))),
                 lambda x, s: s * torch.sigmoid(x.mean((2, 3), keepdim=True))),
                (Fn(lambda m, x: x * x), None)],
    # a comparison is a recorded mask: a constant, for every method as for autograd
    "comparison": [(Fn(lambda m, x: x * (x > 0.1).float()), lambda x, s: s * (x > 0.1)),
                   (Fn(lambda m, x: torch.where(x > 0, x, 0.1 * x)), None)],
    # a named tuple's field: the signal goes to that item (sort's gradient is a gather)
    "field": [(Fn(lambda m, x: torch.sort(x, dim=1).values), None),
              (Fn(lambda m, x: x * torch.max(x, dim=1, keepdim=True).values), None)],
}


def test_every_rule_has_a_case():
    assert set(CASES) == {rule.kind for rule in registered_rules()}


@pytest.mark.agreement
@pytest.mark.parametrize("kind,index", [(k, i) for k, cases in CASES.items()
                                        for i in range(len(cases))])
def test_rule_reverse_equals_autograd(kind, index):
    torch.manual_seed(index)
    model, expected_rule = CASES[kind][index]
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    net = dv.Deconvnet(model)
    assert kind in {op.kind for op in net.traced.ops.values()}, "the case must use the rule"
    with torch.no_grad():
        out = model(x)
    s = torch.randn_like(out)
    got = net.project(x, "", signal=s)
    if expected_rule is not None:
        expected = expected_rule(x, s)
    else:
        xx = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(model(xx), xx, s)
    assert got.shape == x.shape
    assert rel_error(got, expected) <= TOLERANCE


def test_registry_rejects_a_second_rule_for_a_kind_or_a_target():
    with pytest.raises(ValueError, match="already registered"):
        register_rule(Rule("conv", "again", reverse=None))
    with pytest.raises(ValueError, match="already belongs to the 'relu' rule"):
        register_rule(Rule("my_relu", "mine", reverse=None, functions=(F.relu,)))
    assert "my_relu" not in {r.kind for r in registered_rules()}


def test_a_method_without_a_rule_for_an_op_refuses_it_by_name():
    bare = RuleSet("bare", "bare method")  # supplies no ReLU rule
    net = dv.Projector(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()), method=bare)
    with pytest.raises(dv.UnsupportedOpError, match="no bare method rule for ReLU at 1"):
        net.reverse_pass("1")
    assert dv.Projector(nn.Sequential(nn.Conv2d(3, 2, 3)), method=bare).reverse_pass("0")


def test_methods_are_named_and_listed():
    from deconvviz.engine.catalogue.methods import METHODS as rule_sets

    assert dv.list_methods("reverse pass") == list(rule_sets)
    assert list(rule_sets)[:4] == ["deconvnet", "guided", "gradient", "lrp"]  # then LRP's
    assert dv.list_methods()[:len(rule_sets)] == list(rule_sets)  # then Captum's
    assert dv.Deconvnet(nn.Sequential(nn.ReLU())).method is DECONVNET
    with pytest.raises(dv.ArgumentError, match="Valid methods: deconvnet, guided, gradient, lrp"):
        dv.Projector(nn.Sequential(nn.ReLU()), method="guidd")


def test_reverse_pass_prints_the_methods_descriptions():
    text = str(dv.Deconvnet(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())).reverse_pass("1"))
    assert DECONVNET.rule("relu").description in text
    assert DECONVNET.rule("conv").description in text


def test_operator_functions_are_matched():
    assert registered_rules()  # the table is not empty
    kinds = {f: r.kind for r in registered_rules() for f in r.functions if r.when is None}
    assert kinds[operator.add] == "add" and kinds[operator.mul] == "scale"
    # a mul of two signals is claimed first by the product rule
    assert [r.kind for r in registered_rules() if operator.mul in r.functions and r.when] == \
        ["product"]
