"""Guided backprop and the gradient: the same engine with other rule sets, held to
independent autograd oracles on every zoo model, in both modes, full-size and in the cone."""
import pytest
import torch
from captum.attr import NeuronGuidedBackprop
from conftest import ZOO, assert_untouched, captured_outputs, snapshot, zoo_model
from oracle import oracle_project, rel_error

import deconvviz as dv
from deconvviz.engine.passes.cone import plan_cone
from deconvviz.engine.passes.seeds import make_seeds

TOLERANCE = 1e-4  # relative max error against the oracle
CLASSES = {"guided": dv.GuidedBackprop, "gradient": dv.Gradient}


def _two_layers(net):
    aliases = list(net.aliases)
    return [aliases[0], aliases[len(aliases) // 2]]


@pytest.mark.agreement
@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("method", ["guided", "gradient"])
def test_agrees_with_the_oracle_on_every_zoo_model(name, method):
    model = zoo_model(name)
    before = snapshot(model)
    net = CLASSES[method](model)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)  # small, to keep the whole zoo under a minute per method
    nonzero = 0
    for layer in _two_layers(net):
        rec = net.record(x, layer)
        channels = rec.activations[layer].shape[1]
        features = [0, channels // 2]
        for mode in ("max", "map"):
            expected = oracle_project(model, x, net.aliases[layer], features, mode,
                                      method=method)
            full = net.project(x, layer, features=features, mode=mode, cone=False, recording=rec)
            assert rel_error(full, expected) <= TOLERANCE, (name, layer, mode)
            nonzero += int(expected.abs().max() > 0)
            if mode == "max":  # the default: the cone wherever it is cheaper
                cone = net.project(x, layer, features=features, recording=rec)
                assert rel_error(cone, expected) <= TOLERANCE, (name, layer, "cone")
    assert nonzero >= 2  # the comparisons are not all between zero maps
    first = _two_layers(net)[0]
    steps = net.reverse_pass(first)
    plan = plan_cone(net.traced, steps.ops, steps.folded, net.method, net.record(x, first),
                     net.layer(first, (64, 64)).node)
    assert plan is not None  # the shallow layer went through the cone
    assert_untouched(model, before)


@pytest.mark.agreement
@pytest.mark.parametrize("name", ["zfnet", "alexnet", "vgg16"])
def test_gradient_equals_autograd_to_float_precision(name):
    # Without BatchNorm or branches the engine's steps are autograd's, in autograd's order;
    # PyTorch does not promise that conv_transpose2d and autograd's convolution backward
    # pick the same kernel, so: 1e-6 of the largest value (float32 rounding is ~1e-7).
    model = zoo_model(name)
    net = dv.Gradient(model)
    x = torch.randn(1, 3, 224, 224)
    layer = list(net.aliases)[len(net.aliases) // 2]
    act = net.record(x, layer).activations[layer]
    xx = x.clone().requires_grad_(True)
    with captured_outputs(model.get_submodule(net.aliases[layer])) as captured:
        model(xx)
    for mode in ("max", "map"):
        seed = make_seeds(act, [5], mode)[:, 0]
        (expected,) = torch.autograd.grad(captured[0], xx, seed, retain_graph=True)
        ours = net.project(x, layer, features=5, mode=mode, cone=False)
        assert rel_error(ours, expected) <= 1e-6
        assert expected.abs().max() > 0


def test_the_tolerance_tells_float_rounding_from_a_wrong_projection():
    # TOLERANCE (1e-4 of the largest value) holds a projection that differs by rounding and
    # catches one that differs by a wrong rule: the perturbations bracket it.
    model = zoo_model("vgg16")
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64)
    expected = oracle_project(model, x, dv.Gradient(model).aliases["conv3_3"], [4],
                              method="guided")
    ours = dv.GuidedBackprop(model).project(x, "conv3_3", features=[4])
    scale = float(expected.abs().max())
    noise = torch.randn_like(expected).sign()
    assert rel_error(ours, expected) <= TOLERANCE
    assert rel_error(ours + 0.5 * TOLERANCE * scale * noise, expected) <= TOLERANCE
    assert rel_error(ours + 3 * TOLERANCE * scale * noise, expected) > TOLERANCE
    # and a real rule difference (the deconvnet's ReLU instead of guided backprop's) is far out
    assert rel_error(dv.Deconvnet(model).project(x, "conv3_3", features=[4]), expected) > 100 * TOLERANCE


@pytest.mark.agreement
def test_gradient_equals_autograd_to_float_precision_with_batchnorm_and_branches():
    model = zoo_model("resnet18")
    net = dv.Gradient(model)
    x = torch.randn(1, 3, 112, 112)
    act = net.record(x, "layer2").activations["layer2"]
    xx = x.clone().requires_grad_(True)
    with captured_outputs(model.layer2) as captured:
        model(xx)
    (expected,) = torch.autograd.grad(captured[0], xx, make_seeds(act, [9], "max")[:, 0])
    # BatchNorm scales ride on the convolution weights and branches add in graph order.
    assert rel_error(net.project(x, "layer2", features=9), expected) <= 1e-6


@pytest.mark.agreement
@pytest.mark.parametrize("name,layer,agrees", [
    ("alexnet", "conv5", True), ("vgg16", "conv4_3", True), ("resnet18", "layer3", True),
    # GoogLeNet calls F.relu everywhere; DenseNet only once, before its classifier.
    ("googlenet", "conv3", False), ("densenet121", "fc", False)])
def test_captum_guided_backprop_is_right_only_where_relus_are_modules(name, layer, agrees):
    model = zoo_model(name)
    net = dv.GuidedBackprop(model)
    torch.manual_seed(2)
    x = torch.randn(1, 3, 112, 112)
    act = net.record(x, layer).activations[layer][0]
    captum = NeuronGuidedBackprop(model, model.get_submodule(net.aliases[layer]))
    errors = []
    for feature in [1, 7]:
        if act.dim() == 1:  # a fully-connected layer's unit
            selector, value = (feature,), float(act[feature])
        else:
            y, xx = divmod(int(act[feature].argmax()), act.shape[-1])
            selector, value = (feature, y, xx), float(act[feature, y, xx])
        assert value != 0
        theirs = value * captum.attribute(x, neuron_selector=selector)
        ours = net.project(x, layer, features=feature)
        assert rel_error(ours, oracle_project(model, x, net.aliases[layer], [feature],
                                              method="guided")[:, 0]) <= TOLERANCE
        errors.append(rel_error(theirs, ours))
    if agrees:
        assert max(errors) <= TOLERANCE
    else:  # Captum misses the functional ReLUs and returns something else
        assert min(errors) > 0.05, errors
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks


def test_three_methods_differ_where_they_should():
    model = zoo_model("vgg16")
    x = torch.randn(1, 3, 112, 112)
    maps = {m: cls(model).project(x, "conv3_3", features=4) for m, cls in
            [("deconvnet", dv.Deconvnet), ("guided", dv.GuidedBackprop),
             ("gradient", dv.Gradient)]}
    assert rel_error(maps["guided"], maps["gradient"]) > 0.05
    assert rel_error(maps["guided"], maps["deconvnet"]) > 0.05
    # Guided backprop is the deconvnet's signal masked by the forward ReLUs: it is zero
    # wherever every path to the input is masked, so it has no more support than the gradient.
    assert (maps["guided"] != 0).sum() <= (maps["gradient"] != 0).sum()


def test_the_methods_print_their_own_rules():
    model = zoo_model("zfnet")
    text = str(dv.GuidedBackprop(model).reverse_pass("conv2"))
    assert text.startswith("Guided backprop from 'conv2'")
    assert "relu(signal) * (input > 0)" in text and "its derivative" in text
    assert "signal * (input > 0)" in str(dv.Gradient(model).reverse_pass("conv2"))
    assert dv.Projector(model, method="guided").method is dv.GuidedBackprop.method
