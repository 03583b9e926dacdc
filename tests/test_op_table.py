"""The op table: every kind of op people put in their own CNN, each inside a small network
(conv -> ReLU -> op -> conv), projected with all three reverse-pass methods.

THIS TABLE IS THE ONE PLACE TO ADD THE NEXT OP: one ``Case`` line below.

Each case is held to an oracle written here, independently of the engine (float64):

- the gradient against plain autograd of ``seed . conv2(...)``;
- the deconvnet and guided backprop against autograd in which exactly the ReLU's backward is
  the method's (deconvnet: ``relu(signal)``; guided: ``relu(signal) * (input > 0)``) and every
  other op keeps its own backward. That is deconvviz's stated convention for these ops: a
  linear op's transpose, any other op's exact vector-Jacobian product at the recorded forward
  point, a comparison's mask and a sort's or max's indices recorded constants (docs/deconvnet.md);
- or a refusal, whose message must name the op and the line of this file where it is written.

Single activations are also projected in their receptive-field cone, which must agree with the
full-size pass.
"""
import re
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_untouched, snapshot
from torch import nn

import deconvviz as dv
from deconvviz.engine.precision import rel_error

TOLERANCE = 1e-9  # relative max error, float64


@dataclass
class Case:
    name: str
    op: Callable  # x [N, 4, 16, 16] after the ReLU -> a map [N, C, h, w]
    module: Optional[Callable[[], nn.Module]] = None  # or the op is a module
    refused: Optional[str] = None  # a regex the refusal must match (else: exact)
    capture: str = "torch.fx"  # how the forward is captured


def _size_branch(x):
    if x.shape[-1] > 8:  # Python control flow on a size: torch.fx cannot trace it
        x = F.avg_pool2d(x, 2)
    return x


def _max_unpacked(x):
    values, indices = torch.max(x, 1, keepdim=True)
    return x * values


def _value_branch(x):
    if x.sum() > 0:  # on a value: nothing can capture it
        x = x * 2
    return x


CASES = [
    Case("interpolate bilinear",
         lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    Case("interpolate nearest", lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    Case("pixel shuffle", lambda x: F.pixel_shuffle(x, 2)),
    Case("roll", lambda x: torch.roll(x, shifts=(1, -2), dims=(2, 3))),
    Case("flip", lambda x: torch.flip(x, dims=(3,))),
    Case("channel softmax", lambda x: torch.softmax(x, dim=1)),
    Case("per-channel standardisation",
         lambda x: (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-5)),
    Case("abs", lambda x: (x - 0.3).abs()),
    Case("clamp", lambda x: x.clamp(0.1, 0.8)),
    Case("tanh", lambda x: torch.tanh(x)),
    Case("x * x", lambda x: x * x),
    Case("avg pool stride 1", lambda x: F.avg_pool2d(x, 3, stride=1, padding=1)),
    Case("max pool stride 1", lambda x: F.max_pool2d(x, 3, stride=1, padding=1)),
    Case("GroupNorm", None, lambda: nn.GroupNorm(2, 4)),
    Case("InstanceNorm", None, lambda: nn.InstanceNorm2d(4, affine=True)),
    Case("Dropout2d (eval)", None, lambda: nn.Dropout2d(0.5)),
    Case("mean subtraction", lambda x: x - x.mean(1, keepdim=True)),
    # named tuples: the indices are recorded constants (the gradient is a gather)
    Case("sort .values", lambda x: torch.sort(x, dim=1).values),
    Case("x * max .values", lambda x: x * torch.max(x, dim=1, keepdim=True).values),
    Case("topk .values", lambda x: torch.topk(x, 2, dim=1).values),
    Case("min [0]", lambda x: x - torch.min(x, dim=1, keepdim=True)[0]),
    Case("median .values", lambda x: x + torch.median(x, dim=1, keepdim=True).values),
    Case("max unpacked", _max_unpacked),
    Case("x * sort .indices", lambda x: x * torch.sort(x, dim=1).indices),
    Case("x * max .indices.float()",
         lambda x: x * torch.max(x, dim=1, keepdim=True).indices.float()),
    # comparisons: the mask is a recorded constant
    Case("leaky ReLU with where", lambda x: torch.where(x > 0.2, x, 0.1 * x)),
    Case("x * (x > t).float()", lambda x: x * (x > 0.3).float()),
    # forwards only torch.export can capture
    Case("cat of reversed chunks",
         lambda x: torch.cat(list(reversed(x.chunk(2, dim=1))), dim=1), capture="torch.export"),
    Case("branch on a size", _size_branch, capture="torch.export"),
    # refusals
    Case("x * argmax", lambda x: x * x.argmax(1, keepdim=True),
         refused=r"argmax at Net\.forward \(test_op_table\.py:{line}\).*index"),
    Case("branch on a value", _value_branch,
         refused=r"cannot capture the forward of Net at test_op_table\.py:{line}"),
]


class Net(nn.Module):
    def __init__(self, case: Case):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.op = case.module() if case.module is not None else None
        self.fn = case.op
        with torch.no_grad():
            channels = self.middle(torch.zeros(1, 4, 16, 16)).shape[1]
        self.conv2 = nn.Conv2d(channels, 3, 3, padding=1)

    def middle(self, x):
        return self.op(x) if self.op is not None else self.fn(x)

    def forward(self, x):
        return self.conv2(self.middle(F.relu(self.conv1(x))))


class _MethodReLU(torch.autograd.Function):
    """ReLU whose backward is the method's rule (the one place the methods differ)."""

    @staticmethod
    def forward(ctx, x, method):
        ctx.save_for_backward(x)
        ctx.method = method
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, s):
        (x,) = ctx.saved_tensors
        rule = {"gradient": s * (x > 0), "deconvnet": F.relu(s),
                "guided": F.relu(s) * (x > 0)}[ctx.method]
        return rule, None


def oracle(model: Net, x, feature: int, method: str):
    """The projection of ``feature``'s whole map (seeded with its values), by autograd."""
    x = x.clone().requires_grad_(True)
    out = model.conv2(model.middle(_MethodReLU.apply(model.conv1(x), method)))
    seed = torch.zeros_like(out)
    seed[:, feature] = out[:, feature].detach()
    (grad,) = torch.autograd.grad(out, x, seed)
    return grad


def _line_of(case: Case) -> int:
    code = case.op.__code__
    if case.op.__name__ == "<lambda>":
        return code.co_firstlineno
    lines = open(code.co_filename).read().splitlines()
    first = code.co_firstlineno
    return next(first + i for i, text in enumerate(lines[first - 1:]) if "if x." in text)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op(case):
    torch.manual_seed(0)
    model = Net(case).double().eval()
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    if case.refused is not None:
        pattern = case.refused.format(line=_line_of(case))
        with pytest.raises(dv.UnsupportedOpError, match=pattern):
            dv.Gradient(model).project(x, "conv2", features=1, mode="map")
        assert_untouched(model, before)
        return
    net = dv.Gradient(model)
    assert net.traced.capture == case.capture
    for method in ("gradient", "deconvnet", "guided"):
        got = net.with_method(method).project(x, "conv2", features=1, mode="map")
        expected = oracle(model, x, 1, method)
        error = rel_error(got, expected)
        assert expected.abs().max() > 0 and error <= TOLERANCE, (method, error)
    # single activations: in the receptive-field cone (where the op lets it) as full size
    deconvnet = net.with_method("deconvnet")
    cone, full = (deconvnet.project(x, "conv2", features=[0, 2], cone=c) for c in (True, False))
    assert rel_error(cone, full) <= TOLERANCE
    if case.name in ("leaky ReLU with where", "sort .values"):
        # the conventions make a difference: the deconvnet is not the gradient here
        assert not torch.allclose(net.with_method("deconvnet").project(x, "conv2", features=1, mode="map"),
                                  oracle(model, x, 1, "gradient"))
    assert_untouched(model, before)


def test_the_table_covers_the_kinds_of_the_issue():
    # the three ways of being captured or refused are all exercised
    assert {c.capture for c in CASES if c.refused is None} == {"torch.fx", "torch.export"}
    assert sum(c.refused is not None for c in CASES) >= 2
    assert len({c.name for c in CASES}) == len(CASES)
    assert all(re.search(r"\{line\}", c.refused) for c in CASES if c.refused)
