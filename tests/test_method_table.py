"""One method table: a method registered in one place reaches every caller (the command
line, dv.list_methods, dv.attribute, the explorer, compare and sanity_check)."""
import pytest
import torch
import torch.nn.functional as F
from conftest import CHELSEA, invoke, zoo_model
from oracle import rel_error

import deconvviz as dv
from deconvviz import method_table
from deconvviz.engine import DECONVNET, RuleSet, register_method, unregister_method


def _half(op, s, ctx):
    return [(op.inputs[0], 0.5 * F.relu(s))]


@pytest.fixture
def toy():
    """The deconvnet, except that every ReLU passes half of the rectified signal."""
    rules = RuleSet(name="toy", title="toy pass",
                    overrides={**DECONVNET.overrides,
                               "relu": (_half, "half the rectified signal: relu(signal) / 2")})
    register_method(rules, summary="the deconvnet at half strength per ReLU")
    try:
        yield rules
    finally:
        unregister_method("toy")


def test_a_registered_method_reaches_every_caller(toy, tmp_path):
    assert dv.list_methods()[-1] == "toy" and dv.list_methods("reverse pass")[-1] == "toy"
    model = zoo_model("zfnet")
    x, _ = dv.load_image(CHELSEA, model)
    # ZFNet's conv3 (its ReLU's output) is three ReLUs above the pixels: the toy pass is the
    # deconvnet divided by 2**3 (a power of two scales floating-point sums exactly; stated
    # tolerance 1e-6 relative).
    ours = dv.attribute(model, x, method="toy", layer="conv3", features=5).map
    deconvnet = dv.attribute(model, x, method="deconvnet", layer="conv3", features=5).map
    assert deconvnet.abs().max() > 0 and rel_error(ours * 8, deconvnet) <= 1e-6
    assert "half the rectified signal" in str(dv.Projector(model, method="toy")
                                              .reverse_pass("conv3"))
    out = tmp_path / "toy.png"
    done = invoke("show", "--model", "zfnet", "--weights", "none", "--layer", "conv3",
                  "--method", "toy", "--top", "2", "--out", out, CHELSEA)
    assert done.returncode == 0, done.stderr
    assert "toy" in invoke("show", "--help").stdout
    compared = dv.compare(model, [CHELSEA], methods=["deconvnet", "toy"], layer="conv3", features=5)
    assert compared.titles["toy"] == "toy pass" and compared.display["toy"] == "signed"
    assert torch.equal(compared.maps["toy"], ours)
    sanity = dv.sanity_check(model, x, methods=["toy"], layers=["classifier.fc8"])
    assert sanity.titles["toy"] == "toy pass" and sanity.steps == ["original", "classifier.fc8"]
    pytest.importorskip("ipywidgets")
    explorer = dv.explore(model, CHELSEA, method="toy")
    assert "toy" in explorer.method_picker.options and explorer.method_picker.value == "toy"


def test_after_unregistering_it_is_refused_everywhere(toy):
    unregister_method("toy")
    try:
        assert "toy" not in dv.list_methods()
        done = invoke("show", "--model", "zfnet", "--weights", "none", "--layer", "conv3",
                      "--method", "toy", CHELSEA)
        assert done.returncode == 2 and "Valid methods: deconvnet, guided, gradient" in \
            done.stderr
        with pytest.raises(dv.ArgumentError, match="unknown method 'toy'"):
            dv.attribute(zoo_model("alexnet"), torch.zeros(1, 3, 64, 64), method="toy")
    finally:
        register_method(toy)  # the fixture removes it again


@pytest.mark.parametrize("entry,message", [
    (dict(name="two words", title="t", kind="reverse pass"), "one word"),
    (dict(name="x", title="t", kind="captum"), "kind is one of reverse pass, attribution"),
    (dict(name="x", title="t", kind="attribution", display="hot"), "display is one of"),
    (dict(name="x", title="t", kind="attribution", explains=("pixel",)), "explains some of"),
    (dict(name="x", title="t", kind="attribution", channels=2), "1 or 3 channels"),
])
def test_a_bad_entry_is_refused(entry, message):
    with pytest.raises(dv.ArgumentError, match=message):
        method_table.Method(**entry)


def test_names_are_unique_and_the_built_in_ones_stay():
    with pytest.raises(dv.ArgumentError, match="exists already"):
        register_method(RuleSet(name="guided", title="again"))
    with pytest.raises(dv.ArgumentError, match="built in"):
        unregister_method("deconvnet")
    with pytest.raises(dv.ArgumentError, match="not a reverse pass method; choose one of "
                                               "deconvnet, guided, gradient"):
        dv.Projector(zoo_model("alexnet"), method="gradcam")


def test_an_attribution_without_an_implementation_is_refused_not_run_as_another():
    method_table.register(method_table.Method("mystery", "mystery", "attribution"))
    try:
        with pytest.raises(dv.ArgumentError, match="no implementation"):
            dv.attribute(zoo_model("alexnet"), torch.zeros(1, 3, 64, 64), method="mystery",
                         target=0)
    finally:
        method_table.unregister("mystery")


def test_compare_and_sanity_trace_the_model_once_for_every_method(monkeypatch):
    import deconvviz.engine.projector as projector

    traced = []
    real = projector.trace
    monkeypatch.setattr(projector, "trace", lambda model: traced.append(model) or real(model))
    model = zoo_model("alexnet")
    dv.compare(model, [CHELSEA], methods=["deconvnet", "guided", "gradient", "gradcam"])
    assert len(traced) == 1
    x = torch.randn(1, 3, 96, 96)
    dv.sanity_check(model, x, methods=["deconvnet", "guided", "gradient"], layers=["classifier.6"])
    assert len(traced) == 2


def test_show_resolves_a_layer_name_once_and_checks_the_model_state_every_time(monkeypatch):
    import deconvviz.engine.passes.layers as layers
    import deconvviz.engine.projector as projector

    resolved = []
    real = layers.resolve_layer

    def counting(traced, layer, aliases):
        resolved.append(layer)
        return real(traced, layer, aliases)

    monkeypatch.setattr(layers, "resolve_layer", counting)
    monkeypatch.setattr(projector, "resolve_layer", counting)
    model = zoo_model("zfnet")
    result = dv.project(model, CHELSEA, layer="conv3", top=4)
    assert resolved == ["conv3"] and len(result) == 4
    # the reverse pass is built once per layer and method, but a model put in training mode
    # afterwards is still refused (its dropout and BatchNorm would differ)
    net = dv.Deconvnet(model)
    assert net.reverse_pass("fc7") is net.reverse_pass("fc7")
    model.train()
    try:
        with pytest.raises(dv.UnsupportedOpError, match="drop6 is in training mode"):
            net.reverse_pass("fc7")
    finally:
        model.eval()
