"""The projector's choice of exact plan: the receptive-field cone or the full-size pass, by
the cone's share of the multiply-adds and the device (engine/passes/plan.py), measured once on a GPU
near the break-even point. Both plans give the same projections."""
import pytest
import torch
from oracle import rel_error
from torch import nn

import deconvviz as dv
from deconvviz.engine.passes import cone_plan as cone_plan_module
from deconvviz.engine.passes import plan as plan_module
from deconvviz.engine.passes.cone_plan import cone_plan
from deconvviz.engine.passes.plan import choose, cone_share, memory_budget


def two_convs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()).eval()


def test_cone_share_counts_multiply_adds_by_hand():
    """8x8 maps. From the second ReLU's unit: that ReLU and the second convolution see a 1x1
    window of their 8x8 outputs, the first ReLU and convolution a 3x3 window. Per value: a
    ReLU costs 1, a convolution 3*3*in_channels multiply-adds."""
    net = dv.Deconvnet(two_convs())
    x = torch.randn(1, 3, 8, 8)
    steps, rec, _, node = net._prepare(x, "3", None)
    plan = cone_plan(net, steps, rec, node, forced=True)
    cone = 5 * 1 + 5 * 9 * 4 * 1 + 4 * 1 * 9 + 4 * 9 * 3 * 9
    full = (5 + 5 * 9 * 4 + 4 + 4 * 9 * 3) * 64
    assert cone_share(plan, steps.ops) == pytest.approx(cone / full, rel=1e-12)


def test_the_cost_model_per_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert [choose(s, cpu) for s in (0.02, 0.54, 0.99, 1.2)] == ["cone"] * 3 + ["full"]
    assert [choose(s, gpu) for s in (0.1, 0.3, 0.54, 0.95)] == ["cone", "measure", "measure",
                                                                   "full"]
    assert memory_budget(123, gpu) == 123 and memory_budget(None, cpu) == 512 * 2**20


@pytest.mark.agreement
def test_measured_plans_give_the_full_passes_projections(monkeypatch):
    """Where the plan is measured (forced here on the CPU), the first seeds run by both
    plans, the faster is cached, and every plan's projections agree."""
    model = two_convs()
    x = torch.randn(2, 3, 12, 12)
    features = [0, 1, 2, 3, 4]
    full = dv.Gradient(model).project(x, "3", features=features, cone=False)
    monkeypatch.setattr(cone_plan_module, "choose", lambda share, device: "measure")
    monkeypatch.setattr(plan_module, "MEASURED", {})
    monkeypatch.setattr(cone_plan_module, "_MEASURED", plan_module.MEASURED)
    net = dv.Gradient(model)
    measured = net.project(x, "3", features=features)
    assert len(plan_module.MEASURED) == 1
    key = next(iter(plan_module.MEASURED))
    assert rel_error(measured, full) <= 1e-5 and measured.shape == full.shape
    for decided in ("full", "cone"):
        plan_module.MEASURED[key] = decided
        again = net.project(x, "3", features=features)
        assert rel_error(again, full) <= 1e-5
        units = net.project_units(x, "3", positions=[(1, 4, 2, 3)])
        assert units.shape == (1, 3, 12, 12)
    plan_module.MEASURED.clear()
    plan_module.MEASURED[key] = "full"  # a cached "full" with no measurement: full pass
    assert rel_error(net.project(x, "3", features=[2]), full[:, 2:3]) <= 1e-5
