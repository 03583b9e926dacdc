"""A forward with optional arguments (``forward(self, x, extra=None)``) runs under every method
of the method table: the trace binds each default as a constant (torch.fx's
``concrete_args``), as ``model(x)`` runs it. A branch on a value the trace cannot see is
refused naming the user's line, never with a bare TypeError."""
import re
from dataclasses import replace

import pytest
import torch
from conftest import assert_untouched, snapshot
from torch import nn

import deconvviz as dv
from deconvviz import method_table
from deconvviz.errors import UnsupportedOpError


class Optional_(nn.Module):
    """Captum's BasicModel_ConvNet_One_Conv pattern, with defaults of three kinds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x, extra=None, scale=1.0, flag=False):
        if extra is not None:
            x = x + extra
        if flag:
            x = x * 2
        x = torch.relu(self.conv(x)) * scale
        return self.fc(x.mean((2, 3)))


class ValueBranch(Optional_):
    def forward(self, x):
        if x.sum() > 0:  # BRANCH ON A VALUE
            x = x * 2
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _with_bounds(name):
    """A z^B composite needs the pixels' bounds: a user model has no preprocessing facts."""
    composite = method_table.composites().get(name)
    if composite is None or "zbox" not in composite.rules():
        return name, None
    mine = replace(composite, name=f"{name}_bounded", low=[-4.0] * 3, high=[4.0] * 3)
    method_table.register_composite(mine)
    return mine.name, mine.name


@pytest.mark.parametrize("method", method_table.names())
def test_every_method_runs_with_optional_arguments(method):
    torch.manual_seed(0)
    model = Optional_().eval()
    before = snapshot(model)
    x = torch.randn(2, 3, 40, 40)
    if method in ("attention_rollout", "chefer_gae"):  # a ViT's attention maps: n/a on a CNN
        with pytest.raises(dv.ArgumentError, match="need global self-attention"):
            dv.attribute(model, x, method=method)
        assert_untouched(model, before)
        return
    name, added = _with_bounds(method)
    try:
        result = dv.attribute(model, x, method=name)
    finally:
        if added is not None:
            dv.unregister_method(added)  # the table and the engine's rule set
    assert result.map.shape[0] == 2 and result.map.shape[-2:] == (40, 40)
    assert torch.isfinite(result.map).all()
    assert_untouched(model, before)


def test_the_default_is_what_the_trace_follows():
    torch.manual_seed(0)
    model = Optional_().eval()
    x = torch.randn(1, 3, 16, 16)
    net = dv.Projector(model, method="gradient")
    ours = net.project(x, "", signal=torch.eye(5)[:1])
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model(leaf)[0, 0], leaf)
    assert torch.allclose(ours, expected, atol=1e-6)
    kinds = {op.kind for op in net.traced.ops.values()}
    assert "unsupported" not in kinds


def test_a_branch_on_a_value_is_refused_naming_the_line():
    model = ValueBranch().eval()
    line = next(i for i, text in enumerate(open(__file__).read().splitlines(), 1)
                if "BRANCH ON A VALUE" in text and "if x" in text)
    for method in ("lrp", "guided", "gradcam"):
        with pytest.raises(UnsupportedOpError) as info:
            dv.attribute(model, torch.randn(1, 3, 16, 16), method=method)
        assert re.search(rf"test_optional_args\.py:{line}\b", str(info.value)), method
        assert "branches on tensor values" in str(info.value)
