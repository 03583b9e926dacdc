import os
import sys

import pytest
from conftest import EXAMPLES, zoo_model

import deconvviz as dv
from deconvviz.analyses.dataset_scan import scan
from deconvviz.explorer import explore, png_bytes
from deconvviz.figures.display import to_uint8

pytest.importorskip("ipywidgets")

CHELSEA = os.path.join(EXAMPLES, "chelsea.png")
COFFEE = os.path.join(EXAMPLES, "coffee.png")


def expected_png(model, path, layer, feature, mode="max", scaling="signed",
                 method="deconvnet"):
    x, rgb = dv.load_image(path, model)
    p = dv.Projector(model, method=method).project(x, layer, features=feature, mode=mode)[0]
    return png_bytes(to_uint8(p, scaling, vmax=float(p.abs().max()), photo=rgb), 224)


def test_pickers_drive_the_projection():
    model = zoo_model("zfnet")
    explorer = explore(model, [CHELSEA, COFFEE])
    assert explorer.layer_picker.options[:3] == ("conv1", "pool1", "norm1")
    first = explorer.projection_view.value
    explorer.layer_picker.value = "conv3"
    assert explorer.feature_picker.max == 383
    explorer.feature_picker.value = 17
    assert explorer.projection_view.value != first
    assert explorer.projection_view.value == expected_png(model, CHELSEA, "conv3", 17)
    assert "conv3 #17" in explorer.value_label.value
    explorer.mode_picker.value = "map"
    assert explorer.projection_view.value == expected_png(model, CHELSEA, "conv3", 17, "map")
    explorer.image_picker.value = 1
    explorer.feature_picker.value = 5
    assert explorer.projection_view.value == expected_png(model, COFFEE, "conv3", 5, "map")


def test_the_method_picker_switches_the_reverse_pass():
    model = zoo_model("zfnet")
    explorer = explore(model, CHELSEA, method="guided")
    explorer.layer_picker.value = "conv2"
    explorer.feature_picker.value = 11
    assert explorer.projection_view.value == expected_png(model, CHELSEA, "conv2", 11,
                                                          method="guided")
    explorer.method_picker.value = "gradient"
    assert explorer.projection_view.value == expected_png(model, CHELSEA, "conv2", 11,
                                                          method="gradient")
    explorer.method_picker.value = "deconvnet"
    assert explorer.projection_view.value == expected_png(model, CHELSEA, "conv2", 11)
    with pytest.raises(dv.ArgumentError, match="deconvnet, guided, gradient"):
        explore(model, CHELSEA, method="gradcam")


def test_thumbnails_are_strongest_first_and_clickable():
    model = zoo_model("zfnet")
    explorer = explore(model, CHELSEA)
    explorer.layer_picker.value = "conv2"
    x, _ = dv.load_image(CHELSEA, model)
    act = dv.Deconvnet(model).record(x, "conv2").activations["conv2"][0]
    strongest = int(act.reshape(act.shape[0], -1).max(dim=1).values.argmax())
    buttons = [box.children[1] for box in explorer.thumbnails.children]
    assert buttons[0].description == f"#{strongest}"
    assert explorer.feature_picker.value == strongest
    buttons[3].click()
    assert explorer.feature_picker.value == int(buttons[3].description[1:])


def test_the_forward_pass_is_recorded_once_per_image(monkeypatch):
    explorer = explore(zoo_model("zfnet"), CHELSEA)
    calls = []
    real = dv.Deconvnet.record
    monkeypatch.setattr(dv.Deconvnet, "record", lambda *a, **k: calls.append(1) or real(*a, **k))
    for layer in ["conv2", "conv4", "fc6"]:
        explorer.layer_picker.value = layer
        explorer.feature_picker.value = 2
    assert calls == []


def test_tensor_input_and_scan_view(tmp_path):
    model = zoo_model("zfnet")
    result = scan(model, [CHELSEA, COFFEE], ["conv2"], top=2, progress=False)
    x, _ = dv.load_image(CHELSEA, model)
    explorer = explore(model, x, scan=result)
    explorer.layer_picker.value = "conv2"
    explorer.feature_picker.value = 7
    assert bytes(explorer.scan_view.value).startswith(b"\x89PNG")


def test_without_ipywidgets_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[notebook\]" in the clone'):
        explore(zoo_model("zfnet"), CHELSEA)


def test_bad_arguments():
    with pytest.raises(dv.ArgumentError, match="max, map"):
        explore(zoo_model("zfnet"), CHELSEA, mode="mean")
    with pytest.raises(dv.ImageError):
        explore(zoo_model("zfnet"), "missing.png")
