"""A model is traced once while its structure stays (engine/passes/graph.py's cache): every Projector,
scan and analysis of it shares the trace and its measured layers. A replaced module,
parameter or buffer, a mode switch or a patched forward traces again; weights changed in
place need no new trace (the graph calls the model's own modules); a model the caller drops
is freed with its trace, also one only torch.export captures."""
import copy
import gc
import weakref

import torch
import torch.nn.functional as F
from torch import nn

import deconvviz as dv
from deconvviz.engine.passes import graph


class _Small(nn.Module):
    def __init__(self, branch=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.branch = branch

    def forward(self, x):
        x = F.relu(self.conv1(x))
        if self.branch and x.shape[-1] > 8:  # only torch.export captures this
            x = F.max_pool2d(x, 2)
        return F.relu(self.conv2(self.drop(x)))


def _model(branch=False):
    torch.manual_seed(0)
    return _Small(branch).eval()


def test_one_trace_while_the_structure_stays():
    model = _model()
    x = torch.randn(1, 3, 16, 16)
    net = dv.Deconvnet(model)
    before = net.project(x, "conv2", features=[1])
    assert dv.Gradient(model).traced is net.traced
    assert dv.Deconvnet(model)._layers is net._layers  # the measured layers are shared too
    with torch.no_grad():  # weights changed in place: the same trace computes with them
        model.conv2.weight.mul_(2)
        model.conv2.bias.mul_(2)
    assert dv.Deconvnet(model).traced is net.traced
    after = dv.Deconvnet(model).project(x, "conv2", features=[1])
    fresh = dv.Deconvnet(copy.deepcopy(model))  # another model object: its own trace
    assert fresh.traced is not net.traced
    assert torch.equal(after, fresh.project(x, "conv2", features=[1]))
    assert torch.allclose(after, 4 * before, rtol=1e-5)  # the seed's value and conv2^T double


def test_a_changed_structure_is_traced_again():
    model = _model()
    x = torch.randn(1, 3, 16, 16)
    first = dv.Deconvnet(model)
    expected = first.project(x, "conv2", features=[0])
    seen = {id(first.traced)}

    model.conv2 = nn.Conv2d(4, 5, 3, padding=1)  # a replaced module
    net = dv.Deconvnet(model)
    assert id(net.traced) not in seen
    seen.add(id(net.traced))
    assert not torch.allclose(net.project(x, "conv2", features=[0]), expected)

    model.conv1.weight = nn.Parameter(model.conv1.weight.detach() * -1)  # a replaced parameter
    assert id(dv.Deconvnet(model).traced) not in seen
    seen.add(id(dv.Deconvnet(model).traced))

    model.train()  # a mode switch (a forward may branch on self.training)
    assert id(graph.trace(model)) not in seen
    model.eval()
    seen.add(id(graph.trace(model)))

    model.conv1.forward = lambda t: nn.Conv2d.forward(model.conv1, t) * 0  # a patched forward
    assert id(graph.trace(model)) not in seen


def test_a_dropped_model_is_freed_with_its_trace():
    for branch, capture in ((False, "torch.fx"), (True, "torch.export")):
        model = _model(branch)
        net = dv.Deconvnet(model)
        assert net.traced.capture == capture
        net.project(torch.randn(1, 3, 16, 16), "conv2", features=[0])
        assert model in graph._TRACES
        alive = weakref.ref(model)
        del model, net
        gc.collect()
        assert alive() is None, capture  # nothing of deconvviz's keeps it
