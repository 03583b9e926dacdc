"""LRP's vocabulary is data: a toy rule and a toy composite, registered here and nowhere else,
draw through show, compare and crp, and give the numbers their formula says."""
import pytest
import torch
from PIL import Image
from torch import nn

import deconvviz as dv
from deconvviz import method_table
from deconvviz.engine import register_lrp_rule, unregister_lrp_rule
from deconvviz.method_table import Composite, LrpRule, register_composite

EPSILON = 0.25


def toy_terms(at):
    """The z-rule with its own ε, written out: ``x·Wᵀ(R / (z + ε·sign(z)))``."""
    z = at.forward(at.x, at.w, at.b)
    e = at.values["epsilon"]
    return [(z + e * torch.where(z >= 0, 1.0, -1.0).to(z), None)], [(1.0, at.x, at.w, 0)]


@pytest.fixture
def toy():
    """``lrp_toy`` (the toy rule on every layer) and ``lrp_reference`` (the built-in ε rule
    with the same ε), as data; removed afterwards."""
    register_lrp_rule(LrpRule("toy", "toy", ("epsilon",), summary="a toy z-rule"), toy_terms)
    register_composite(Composite("lrp_toy", "LRP toy", first=None, conv="toy", linear="toy",
                                 epsilon=EPSILON))
    register_composite(Composite("lrp_reference", "LRP ε=0.25", first=None, conv="epsilon",
                                 linear="epsilon", epsilon=EPSILON))
    try:
        yield
    finally:
        dv.unregister_method("lrp_toy")
        dv.unregister_method("lrp_reference")
        unregister_lrp_rule("toy")


def tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(20, 3)).eval()


def test_a_toy_rule_and_composite_draw_through_show_compare_and_crp(toy, tmp_path):
    assert method_table.get("lrp_toy").relevance
    model = tiny_cnn()
    photo = tmp_path / "photo.png"
    Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()).save(photo)
    x = dv.load_image(str(photo), model)[0]

    report = dv.show(model, [str(photo)], layer="3", method="lrp_toy", top=2, out=str(tmp_path / "s.png"))
    assert report.written and not report.failed

    both = dv.compare(model, x, methods=["lrp_toy", "lrp_reference"])
    toy_map, reference = both.maps["lrp_toy"], both.maps["lrp_reference"]
    assert toy_map.abs().max() > 0
    assert torch.allclose(toy_map, reference, rtol=0, atol=1e-6 * float(reference.abs().max()))

    ours = dv.crp(model, x, layer="3", features=[0, 1], method="lrp_toy")
    theirs = dv.crp(model, x, layer="3", features=[0, 1], method="lrp_reference")
    assert ours.method == "lrp_toy"
    assert torch.allclose(ours.heatmaps, theirs.heatmaps, rtol=0,
                          atol=1e-6 * float(theirs.heatmaps.abs().max()))


def test_the_toy_rule_gives_its_formula_by_hand(toy):
    """One linear layer: ``R_i = x_i w_ki R_k / (z_k + ε sign z_k)``, with ``R_k`` the logit."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    net = dv.Projector(model, method="lrp_toy")
    z = model(x)
    k = int(z.argmax())
    signal = torch.zeros_like(z)
    signal[0, k] = z[0, k]
    ours = net.project(x, "", signal=signal)
    w = model[1].weight[k]
    expected = (x.flatten() * w * z[0, k] / (z[0, k] + EPSILON * z[0, k].sign())).reshape(x.shape)
    assert torch.allclose(ours, expected.detach(), rtol=1e-12, atol=0)


def test_a_rule_in_the_table_needs_a_builder():
    method_table.register_lrp_rule(LrpRule("unbuilt", "unbuilt"))
    try:
        with pytest.raises(ImportError, match="unbuilt"):
            from deconvviz.engine.catalogue.lrp_layers import check_terms
            check_terms()
        register_composite(Composite("lrp_unbuilt", "LRP unbuilt", first=None,
                                     conv="unbuilt", linear="unbuilt"))
        try:
            with pytest.raises(dv.ArgumentError, match="no term builder"):
                dv.Projector(tiny_cnn(), method="lrp_unbuilt")
        finally:
            dv.unregister_method("lrp_unbuilt")
    finally:
        method_table.unregister_lrp_rule("unbuilt")


def test_presets_are_rules_with_parameters():
    rule, values = method_table.resolve_rule("alpha2beta1")
    assert rule.name == "alphabeta" and values == {"alpha": 2.0, "beta": 1.0}
    assert Composite("c", "c", conv="alphabeta", alpha=2.0, beta=1.0).parameters("alphabeta") \
        == Composite("c", "c", conv="alpha2beta1").parameters("alpha2beta1")
    with pytest.raises(dv.ArgumentError, match="choose one of epsilon, zplus"):
        Composite("bad", "bad", conv="zplu")
