"""Issue 35, items 2, 3, 4 and 7: a blank or vanished answer is never drawn as one.

A unit that no gradient reaches, or that never fires, is titled so (feature_vis, show,
evolution) and flagged in its result; a minimised unit's value is its own activation; a map
that is numerically zero, or a relevance map that lost the logit, says so under its tile and
in its result (:func:`deconvviz.analyses.map_check.check_map`). Hand-weighted nets, exact
expectations.
"""
import numpy as np
import pytest
import torch
from conftest import CHELSEA
from torch import nn

import deconvviz as dv

FV = dict(steps=8, image_size=16, input_size=16, transforms=None)


def texts(fig) -> str:
    """Every title, label and text of a figure and its sub-figures, one string."""
    found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(t for t in found if t).replace("\n", " ")


def three_units(layer_relu: bool = True) -> nn.Module:
    """A conv of three units: 0 an ordinary one, 1 a zero filter (no gradient reaches the
    image), 2 a bias of -100 (never fires within reach)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 3, 3, padding=1)] + ([nn.ReLU()] if layer_relu else [])
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        net[0].weight.normal_()
        net[0].bias.zero_()
        net[0].weight[1].zero_()
        net[0].bias[2] = -100.0
    return net


# -- item 2 (a): feature visualisation ------------------------------------------------------

def test_feature_vis_flags_a_unit_no_gradient_reaches_and_one_that_never_fires(tmp_path):
    result = dv.feature_vis(three_units(), "1", features=[0, 1, 2], **FV)
    assert result.pre_relu
    assert result.reached.tolist() == [[True], [False], [True]]
    assert result.fired.tolist() == [[True], [False], [False]]
    assert result.values[2, 0] < -90  # the pre-activation, still far below zero
    titles = [ax.get_title().replace("\n", " ") for ax in result.figure().axes]
    assert titles[1] == "unit 1 no gradient reached the image"
    assert titles[2] == "unit 2 never fired"
    assert "never fired" not in titles[0] and "no gradient" not in titles[0]
    # without values the reasons stay
    bare = [ax.get_title().replace("\n", " ") for ax in result.figure(values=False).axes]
    assert bare[:3] == ["unit 0", "unit 1 no gradient reached the image", "unit 2 never fired"]
    data = np.load(result.save(tmp_path / "fv.npz"))
    assert data["reached"].tolist() == [[True], [False], [True]]
    assert data["fired"].tolist() == [[True], [False], [False]]


def test_feature_vis_flags_with_diversity_and_without_a_relu():
    # the diversity penalty reaches every image: the objective's own gradient decides
    diverse = dv.feature_vis(three_units(), "1", features=[0, 1], images_per_unit=2,
                             diversity=1.0, **FV)
    assert diverse.reached.tolist() == [[True, True], [False, False]]
    # a conv read directly: no ReLU left out, so no "fired" question; its value is the answer
    plain = dv.feature_vis(three_units(layer_relu=False), "0", features=[0, 1, 2], **FV)
    assert plain.fired is None and plain.reached.tolist() == [[True], [False], [True]]
    assert plain.notes()[2][0] == f"{float(plain.values[2, 0]):.3g}"


# -- item 3: a minimised unit's value is its activation ----------------------------------------

def test_a_minimised_units_value_is_its_own_activation(tmp_path):
    net = three_units()
    result = dv.feature_vis(net, "1", features=[0], negative=True, **FV)
    image = result.images[:, 0]  # [0, 1] at 16 px, the model's input size: no resizing
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in ((0.485, 0.456, 0.406),
                                                             (0.229, 0.224, 0.225)))
    with torch.no_grad():
        activation = net[0]((image - mean) / std)[0, 0].mean()  # before its ReLU
    assert activation < 0
    assert torch.isclose(result.values[0, 0], activation, rtol=1e-4)
    assert "values: the unit's activation (mean of its map), minimised" in result.settings()
    assert "minimised" in texts(result.figure())
    data = np.load(result.save(tmp_path / "neg.npz"))
    assert data["values"][0, 0] < 0 and "minimised" in str(data["value_name"])
    assert result.fired is None  # minimising a unit aims at its not firing


# -- item 2 (b): show and project ---------------------------------------------------------------

def test_project_titles_a_feature_that_never_fired():
    x = torch.rand(1, 3, 12, 12)
    p = dv.project(three_units(), x, layer="1", features=[0, 2])
    assert p.fired == [True, False] and p.values[1] == 0
    assert p.tile_titles()[1] == "#2 never fired"
    assert p.tile_titles()[0].startswith("#0  ")
    assert "#2 never fired" in texts(p.figure()) and "#2  0" not in texts(p.figure())


def test_show_titles_a_feature_that_never_fired(tmp_path, monkeypatch):
    drawn = []
    real = dv.figures.save_figure

    def keep(fig, path, **kwargs):
        drawn.append(texts(fig))
        return real(fig, path, **kwargs)

    monkeypatch.setattr(dv.figures, "save_figure", keep)
    report = dv.show(three_units(), torch.rand(1, 3, 12, 12), layer="1", features=[0, 2],
                     out=str(tmp_path / "show.png"))
    assert report.written and "#2 never fired" in drawn[0]


# -- item 2 (c) and 7: evolution -----------------------------------------------------------------

def test_evolution_says_never_fired_and_numerically_zero(tmp_path):
    net = three_units()
    with torch.no_grad():
        net[0].bias[1] = 1.0  # unit 1 fires everywhere, but its filter is zero: a zero map
    first = tmp_path / "epoch_1.pt"
    torch.save(net.state_dict(), first)
    result = dv.evolution(net, CHELSEA, checkpoints=[str(first)], layers=["1"],
                          features=[0, 1, 2], progress=False)
    notes = result.notes["1"]
    assert notes[0] == [None]
    assert notes[1][0].startswith("numerically zero")
    assert notes[2] == ["never fired"]
    shown = texts(result.figure())
    assert "never fired" in shown and "numerically zero" in shown


# -- items 4 and 7: the map check ----------------------------------------------------------------

def test_check_map_bounds():
    from deconvviz.analyses.map_check import RELEVANCE_KEPT, ZERO_SHARE, check_map

    assert check_map(torch.zeros(3, 2, 2), 1.0, False).startswith("numerically zero")
    tiny = torch.full((3, 2, 2), ZERO_SHARE * 5.0)  # max |map| = 1e-12 of a seed of 5
    assert check_map(tiny, 5.0, False).startswith("numerically zero")
    assert check_map(tiny * 1.01, 5.0, False) is None
    assert check_map(torch.ones(2, 2), 4.0, True) is None  # the whole logit
    lost = torch.full((10,), RELEVANCE_KEPT[0] / 20)  # sums to half the lowest share kept
    assert check_map(lost, 1.0, True) == ("relevance not conserved: the input holds 0.0005 "
                                          "of the logit")
    assert check_map(lost, 1.0, False) is None  # not relevance: no sum to keep
    assert check_map(torch.full((2,), -0.3), 1.0, True) is None  # a bias took the sign
    assert "holds 11 of" in check_map(torch.full((2,), 5.5), 1.0, True)
    assert check_map(torch.tensor([1.0, float("nan")]), 1.0, False).startswith("not finite")


def classifier(absorbing: bool = False, dead: bool = False) -> nn.Module:
    """conv - ReLU - average - linear: 2 classes; with ``absorbing``, class 1's logit is
    almost all its bias, which takes (under the epsilon rule) almost all of its relevance."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[0].bias.fill_(0.1)
        net[-1].bias.zero_()
        if absorbing:
            net[-1].bias[1] = 1e5
        if dead:
            net[-1].weight[0].zero_()  # class 0's logit is its bias: no input reaches it
            net[-1].bias[0] = 2.0
    return net


def test_compare_notes_a_zero_map_and_lost_relevance():
    x = torch.rand(2, 3, 12, 12)
    dead = dv.compare(classifier(dead=True), x, methods=["gradient", "lrp"], target=0)
    for method in ("gradient", "lrp"):
        assert all(n.startswith("numerically zero") for n in dead.notes[method])
    assert "numerically zero" in texts(dead.figure())
    normal = dv.compare(classifier(), x, methods=["gradient", "lrp"], target=1)
    assert normal.notes == {"gradient": [None, None], "lrp": [None, None]}
    assert "numerically zero" not in texts(normal.figure())
    share = normal.maps["lrp"].flatten(1).sum(1) / classifier()(x)[:, 1]
    assert torch.allclose(share, torch.ones(2), atol=1e-2)  # conserved (the flat rule)
    # the bias carries the logit: the input holds ~1e-6 of it (LayerNorm, which lost it
    # before, now conserves: AttnLRP's rule)
    normed = dv.compare(classifier(absorbing=True), x, methods=["lrp"], target=1)
    for note in normed.notes["lrp"]:
        assert note.startswith("relevance not conserved: the input holds")
        assert note.endswith("of the logit")
    assert "relevance not conserved" in texts(normed.figure())


def test_the_seed_totals_make_attributions_note_in_one_call():
    from deconvviz.analyses import map_check

    model, x = classifier(absorbing=True), torch.rand(2, 3, 12, 12)
    target = dv.analyses.attribution.resolve_target(model, x, 1)
    maps = dv.analyses.attribution.attribute_map(model, x, "lrp", resolved=target)
    with torch.no_grad():
        logits = model(x)[:, 1].tolist()
    assert map_check.seed_totals(model, x, "lrp", target) == pytest.approx(logits)
    assert map_check.seed_totals(model, x, "gradient", target) == [1.0, 1.0]
    notes = map_check.notes_for(model, x, "lrp", target, maps)
    assert all(n.startswith("relevance not conserved") for n in notes)
    unit = dv.analyses.attribution.resolve_target(model, x, layer="1", feature=0)
    with torch.no_grad():
        act = model[:2](x)[:, 0].flatten(1).max(1).values.tolist()
    assert map_check.seed_totals(model, x, "gradient", unit) == pytest.approx(act)


def test_project_notes_a_zero_projection():
    net = three_units()
    with torch.no_grad():
        net[0].bias[1] = 1.0  # fires everywhere from its bias alone: a zero projection
    # (the ε rule: LRP's flat rule spreads relevance over the field whatever the weights)
    p = dv.project(net, torch.rand(1, 3, 12, 12), layer="1", features=[0, 1],
                   method="lrp_epsilon")
    assert p.fired == [True, True] and p.notes[0] is None
    assert p.notes[1].startswith("numerically zero")
    assert "numerically zero" in texts(p.figure())
