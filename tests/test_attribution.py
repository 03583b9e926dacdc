"""dv.attribute, dv.compare and dv.sanity_check: every method on every zoo model, targets
by class name, Captum's hooks removed, the user's model unchanged."""
import os

import pytest
import torch
from captum.attr import Saliency
from conftest import EXAMPLES, FAMILIES, assert_untouched, invoke, snapshot, zoo_model
from oracle import oracle_project, rel_error
from PIL import Image

import deconvviz as dv
from deconvviz.analyses.attribution import default_cam_layer, resolve_target
from deconvviz.analyses.sanity import parametrised_layers

CHELSEA = os.path.join(EXAMPLES, "chelsea.png")
CAPTUM = ["gradcam", "guided_gradcam", "integrated_gradients", "smoothgrad", "occlusion"]
FAST = dict(n_steps=2, nt_samples=2, window=32, stride=32)  # small settings for the tests


def test_the_method_list_is_the_tables():
    from deconvviz import method_table
    from deconvviz.analyses.attention_maps import ATTENTION_METHODS
    from deconvviz.analyses.cams import CAMS
    from deconvviz.engine.catalogue.lrp import COMPOSITES, RULE_METHODS
    from deconvviz.method_table import TRANSFORMER_COMPOSITES

    lrp = [c.name for c in (*COMPOSITES, *RULE_METHODS, *TRANSFORMER_COMPOSITES)]
    family = [m for m in CAMS if m != "gradcam"] + list(ATTENTION_METHODS)
    assert dv.list_methods() == method_table.names() == ["deconvnet", "guided", "gradient",
                                                          *lrp, *CAPTUM, *family]
    assert dv.list_methods("attribution") == CAPTUM + family
    with pytest.raises(dv.ArgumentError, match="choose one of reverse pass, attribution"):
        dv.list_methods("captum")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_captum_method_runs_on_every_zoo_family_for_a_class(name):
    model = zoo_model(name)
    before = snapshot(model)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    target = resolve_target(model, x)
    for method in CAPTUM:
        a = dv.attribute(model, x, method=method, target=target.classes[0], **FAST).map
        assert a.shape == ((1, 1, 64, 64) if method == "gradcam" else (1, 3, 64, 64)), method
        assert torch.isfinite(a).all(), method
        # On random weights Grad-CAM (rectified) may be all zero, and occluding a quarter of
        # a noise image may not move the logit by a float32 step; these are checked below.
        if method in ("integrated_gradients", "smoothgrad"):
            assert a.abs().max() > 0, method
    assert_untouched(model, before)  # Captum's hooks are gone, the weights unchanged


@pytest.mark.agreement
def test_class_targets_of_the_reverse_passes_are_exact():
    model = zoo_model("vgg16")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)[0]
    top = int(logits.argmax())
    assert logits[top] > 0
    # The gradient of the logit: Captum's Saliency (abs=False) computes the same thing.
    ours = dv.attribute(model, x, method="gradient", target=top).map
    theirs = Saliency(model).attribute(x, target=top, abs=False)
    assert rel_error(ours, theirs) <= 1e-5
    # Guided backprop of the logit, against the independent oracle at the output, which
    # seeds the logit's (positive) value where dv.attribute seeds 1.
    guided = dv.attribute(model, x, method="guided").map  # the top-1 class by default
    expected = oracle_project(model, x, "", [top], mode="map", method="guided")[:, 0]
    assert rel_error(guided * float(logits[top]), expected) <= 1e-4


@pytest.mark.agreement
def test_occlusion_equals_occluding_by_hand():
    model = zoo_model("alexnet")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224) * 3
    a = dv.attribute(model, x, method="occlusion", target=5, window=112, stride=112).map
    with torch.no_grad():
        full = float(model(x)[0, 5])
        for top, left in [(0, 0), (0, 112), (112, 0), (112, 112)]:
            occluded = x.clone()
            occluded[..., top:top + 112, left:left + 112] = 0  # the mean colour
            drop = full - float(model(occluded)[0, 5])
            square = a[0, :, top:top + 112, left:left + 112]
            # Float32 rounding alone moves a drop by up to 1.4e-6 of the logit here (measured
            # against float64, under MKL_CBWR=COMPATIBLE at 2 threads), so 1e-6 failed on
            # some kernels; the four drops differ from each other by at least a quarter of
            # the logit, so a square in the wrong place still fails at 1e-5.
            assert torch.allclose(square, torch.full_like(square, drop), rtol=1e-4,
                                  atol=1e-5 * abs(full))
    assert a.abs().max() > 0


def test_class_names_resolve():
    model = zoo_model("vgg16")
    x = torch.randn(1, 3, 64, 64)
    assert resolve_target(model, x, "tabby").classes == [281]
    assert resolve_target(model, x, "Tabby").classes == [281]
    assert resolve_target(model, x, "281").classes == [281]
    assert resolve_target(model, x, 0).label() == "tench (0)"
    with pytest.raises(dv.ArgumentError, match="Did you mean 'tabby'"):
        resolve_target(model, x, "tabby cat")
    with pytest.raises(dv.ArgumentError, match="valid classes are 0 to 999"):
        resolve_target(model, x, 1000)
    with pytest.raises(dv.ArgumentError, match="no class names"):
        resolve_target(zoo_model("zfnet"), x, "tabby")  # ZFNet has no weights, no names
    assert resolve_target(zoo_model("zfnet"), x, 3).label() == "class 3"


def test_grad_cam_cannot_explain_a_unit_below_its_layer():
    model = zoo_model("vgg16")
    x = torch.randn(1, 3, 64, 64)
    assert default_cam_layer(dv.Gradient(model)) == "conv5_3"
    with pytest.raises(dv.ArgumentError, match="n/a"):
        dv.attribute(model, x, method="gradcam", layer="conv4_3", features=3)
    assert dv.attribute(model, x, method="gradcam", layer="fc7", features=3).map.shape == (1, 1, 64, 64)
    result = dv.compare(model, [CHELSEA], methods=["guided", "gradcam"], layer="conv4_3", features=3)
    assert set(result.maps) == {"guided"} and "gradcam" in result.not_applicable
    assert result.figure().axes  # drawn, with "n/a" in Grad-CAM's cell
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks


def test_default_cam_layers_are_each_architectures_last_block():
    expected = {"zfnet": "conv5", "alexnet": "conv5", "vgg16": "conv5_3",
                "googlenet": "inception5b", "resnet50": "layer4", "densenet121": "norm5"}
    for name, layer in expected.items():
        assert default_cam_layer(dv.Gradient(zoo_model(name))) == layer, name


def test_compare_figure_and_arrays(tmp_path):
    model = zoo_model("alexnet")
    result = dv.compare(model, [CHELSEA, os.path.join(EXAMPLES, "coffee.png")],
                        methods=["deconvnet", "gradcam", "occlusion"], window=56, stride=56)
    assert result.probabilities is not None and len(result.probabilities) == 2
    assert result.maps["gradcam"].shape == (2, 1, 224, 224)
    assert result.maps["gradcam"].amax(dim=(1, 2, 3)).min() > 0
    png = result.save(tmp_path / "c.png", dpi=80)
    with Image.open(png) as img:
        assert img.width == 560  # 7 in at 80 dpi
    data = dict(__import__("numpy").load(result.save(tmp_path / "c.npz")))
    assert data["map_deconvnet"].shape == (2, 3, 224, 224)


def test_sanity_check_cascade(tmp_path):
    model = zoo_model("alexnet")
    before = snapshot(model)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96)
    result = dv.sanity_check(model, x, methods=["deconvnet", "gradient", "gradcam"])
    layers = parametrised_layers(model)
    assert len(layers) == 8 and len(result.steps) == len(layers) + 1  # 5 conv + 3 linear
    assert result.steps[1] == "classifier.6" and result.steps[-1] == "features.0"
    for method in result.methods:
        for metric, values in result.scores[method].items():
            assert values[0] == pytest.approx(1.0, abs=1e-6), (method, metric)
    # Randomising every layer destroys the gradient's map (Adebayo's finding).
    assert result.scores["gradient"]["spearman_signed"][-1] < 0.5
    assert_untouched(model, before)
    # The Spearman values, recomputed by hand: Pearson correlation of the ranks.
    a = result.maps["gradient"][0, 0].sum(0).flatten().double()
    b = result.maps["gradient"][3, 0].sum(0).flatten().double()
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    by_hand = float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
    assert result.scores["gradient"]["spearman_signed"][3] == pytest.approx(by_hand, abs=1e-6)
    csv = result.save(tmp_path / "s.csv")
    lines = open(csv).read().splitlines()
    assert lines[0] == "step,layer,method,spearman_abs,spearman_signed,ssim"
    assert len(lines) == 1 + 3 * 9
    assert result.figure().axes


def test_compare_and_sanity_commands(tmp_path):
    proc = invoke("compare", "--model", "alexnet", "--weights", "none", "--methods",
               "guided,gradcam", "--target", "tabby", "--out", "c.png", CHELSEA, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["c.png"] and (tmp_path / "c.png").exists()
    proc = invoke("sanity", "--model", "alexnet", "--weights", "none", "--methods", "gradient",
               "--out", "s.pdf", "--csv", "s.csv", CHELSEA, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["s.pdf", "s.csv"]
    proc = invoke("compare", "--model", "alexnet", "--weights", "none", "--methods", "guidd",
               "--out", "x.png", CHELSEA, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown method 'guidd'" in proc.stderr
    proc = invoke("compare", "--model", "alexnet", "--weights", "none", "--target", "tabby cat",
               "--out", "x.png", CHELSEA, cwd=tmp_path)
    assert proc.returncode == 2 and "Did you mean 'tabby'" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_show_with_guided_backprop(tmp_path):
    proc = invoke("show", "--model", "zfnet", "--weights", "none", "--layer", "conv2", "--top",
               "2", "--method", "guided", CHELSEA, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = dv.project(zoo_model("zfnet"), CHELSEA, layer="conv2", top=2, method="guided")
    assert "(guided, max)" in result.title
    expected = dv.GuidedBackprop(zoo_model("zfnet")).project(
        dv.load_image(CHELSEA, zoo_model("zfnet"))[0], "conv2", features=result.features)[0]
    assert torch.equal(result.pixels, expected)
