"""Region perturbation on the incremental forward (engine.passes.chain.IncrementalChain)
equals its plain batched passes, with regions at the border and images in several groups;
a model the engine cannot trace falls back to the plain passes."""
import warnings

import pytest
import torch
from metrics_cases import Net, net_inputs
from torch import nn

from deconvviz.analyses.evaluation import compute
from deconvviz.errors import DeconvvizError


@pytest.mark.agreement
@pytest.mark.parametrize("patch,how", [(3, "morf"), (7, "lerf")])
def test_incremental_steps_equal_plain_passes(patch, how):
    torch.manual_seed(0)
    model = Net().double().eval()
    inputs = net_inputs(model)
    plain = compute(f"region_perturbation_{how}", inputs, patch_size=patch, regions=8,
                    baseline="black", incremental=False)
    chain = compute(f"region_perturbation_{how}", inputs, patch_size=patch, regions=8,
                    baseline="black", incremental=True)
    scale = plain.curve.abs().max()
    assert (chain.curve - plain.curve).abs().max() <= 1e-12 * scale
    assert chain.forward_passes == plain.forward_passes == 5 * 9
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
    inputs = net_inputs(model, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = compute("region_perturbation_morf", inputs, patch_size=5, regions=3)
        except DeconvvizError:  # pragma: no cover - the engine may still capture it
            pytest.skip("the engine captured the model after all")
    plain = compute("region_perturbation_morf", inputs, patch_size=5, regions=3,
                    incremental=False, baseline="black")
    assert got.curve.shape == plain.curve.shape == (2, 3)


@pytest.mark.agreement
def test_irof_incremental_steps_equal_plain_passes():
    torch.manual_seed(0)
    model = Net().double().eval()
    inputs = net_inputs(model, n=3)
    plain = compute("irof", inputs, segments=12, baseline=0.0, incremental=False)
    chain = compute("irof", inputs, segments=12, baseline=0.0, incremental=True)
    assert (chain.curve - plain.curve).abs().max() <= 1e-12
    assert (chain.per_image - plain.per_image).abs().max() <= 1e-12
    assert chain.forward_passes == plain.forward_passes
