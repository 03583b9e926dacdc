"""Region perturbation on the incremental forward (engine.passes.chain.IncrementalChain)
equals its plain batched passes, with regions at the border and images in several groups;
a model the engine cannot trace falls back to the plain passes."""
import warnings

import pytest
import torch
from torch import nn

from deconvviz.analyses.evaluation import Inputs, compute
from deconvviz.errors import DeconvvizError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 5 * 5, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = self.pool(torch.relu(self.b(x)) + 0.5)
        return self.head(x.flatten(1))


def _inputs(model, n=5):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 20, 20, generator=g, dtype=torch.float64)
    maps = torch.randn(n, 3, 20, 20, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return Inputs(model, x, maps, y, batch_size=2)


@pytest.mark.agreement
@pytest.mark.parametrize("patch,how", [(3, "morf"), (6, "lerf")])
def test_incremental_steps_equal_plain_passes(patch, how):
    torch.manual_seed(0)
    model = Net().double().eval()
    inputs = _inputs(model)
    plain = compute(f"region_perturbation_{how}", inputs, patch_size=patch, regions=12,
                    baseline="black", incremental=False)
    chain = compute(f"region_perturbation_{how}", inputs, patch_size=patch, regions=12,
                    baseline="black", incremental=True)
    scale = plain.curve.abs().max()
    assert (chain.curve - plain.curve).abs().max() <= 1e-12 * scale
    assert chain.forward_passes == plain.forward_passes == 5 * 13
    for m in model.modules():  # no hook left behind
        assert not m._forward_hooks and not m._forward_pre_hooks


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: no symbolic trace
            x = x * 2
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_a_model_that_cannot_be_traced_runs_plain_passes():
    model = Branchy().double().eval()
    inputs = _inputs(model, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = compute("region_perturbation_morf", inputs, patch_size=5, regions=3)
        except DeconvvizError:  # pragma: no cover - the engine may still capture it
            pytest.skip("the engine captured the model after all")
    plain = compute("region_perturbation_morf", inputs, patch_size=5, regions=3,
                    incremental=False, baseline="black")
    assert got.curve.shape == plain.curve.shape == (2, 3)
