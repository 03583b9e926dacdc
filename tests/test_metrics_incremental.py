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


@pytest.mark.parametrize("metric", ["region_perturbation_morf", "irof"])
def test_steps_that_do_not_pay_finish_as_plain_passes(monkeypatch, metric):
    # the automatic choice times the chain's steps against a full pass and runs the rest
    # plainly where they cost more (here: always, WORTH = 0); the curve is the same, and
    # incremental=True keeps the chain
    from deconvviz.analyses.evaluation import chain_runner

    torch.manual_seed(0)
    model = Net().double().eval()
    inputs = net_inputs(model, n=3)
    params = ({"patch_size": 3, "regions": 12, "baseline": "black"}
              if metric.startswith("region") else {"segments": 60, "baseline": 0.0})
    plain = compute(metric, inputs, incremental=False, **params)
    runs = []
    real = chain_runner.Chain.curve

    def spy(self, *args):
        got = real(self, *args)
        runs.append(self.fell_back)
        return got

    monkeypatch.setattr(chain_runner.Chain, "curve", spy)
    monkeypatch.setattr(chain_runner, "WORTH", 0.0)
    auto = compute(metric, inputs, **params)
    kept = compute(metric, inputs, incremental=True, **params)
    assert runs == [True, False]
    for got in (auto, kept):
        assert (got.curve - plain.curve).abs().max() <= 1e-12 * plain.curve.abs().max()
        assert got.forward_passes == plain.forward_passes
