"""Models beyond the zoo by library and name: torchvision:NAME (any torchvision classification
model, its weights through torchvision's weights API, offline as the zoo's) and timm:NAME."""
import os
import re
import sys

import pytest
import torch
from conftest import CHELSEA, invoke

import deconvviz as dv


def test_layers_lists_a_torchvision_model():
    proc = invoke("layers", "--model", "torchvision:mobilenet_v3_small", "--input-size", 64)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line for line in proc.stdout.splitlines()[1:]}
    assert "16x32x32" in rows["features.0"]  # stride 2 on 64 px
    assert "features.1.block.1" in rows  # the squeeze-excitation, by module path


@pytest.mark.parametrize("name,expected", [
    ("torchvision:efficientnet_b9", r"unknown torchvision model 'efficientnet_b9'\. Did you "
                                    r"mean 'efficientnet_b7'.*Valid torchvision classification "
                                    r"models: alexnet, .*efficientnet_b0"),
    ("torchvision:fasterrcnn_resnet50_fpn", r"Valid torchvision classification models"),
    ("foo:resnet50", r"unknown model source 'foo'.*torchvision:NAME, timm:NAME.*zfnet"),
    ("efficientnet_b0", r"unknown model 'efficientnet_b0'.*torchvision:NAME"),
])
def test_bad_names_get_one_line_naming_the_choices(name, expected):
    proc = invoke("layers", "--model", name)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(expected, lines[0]), lines[0]


def test_timm_without_timm_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises, as if not installed
    proc = invoke("layers", "--model", "timm:resnet50")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: timm:resnet50 needs timm, which is not installed "
                                   "(pip install timm); use a zoo model or torchvision:NAME")


def test_default_weights_come_from_the_torch_hub_cache_or_fail_clearly():
    name = "torchvision:mobilenet_v3_small"
    with pytest.raises(dv.WeightsError, match=r"no ImageNet weights for "
                                              r"torchvision:mobilenet_v3_small: not in the "
                                              r"torch hub cache"):
        dv.load_model(name)
    # A fake cache (the test's own TORCH_HOME): a state dict under torchvision's file name.
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    torch.manual_seed(3)
    state = mobilenet_v3_small().state_dict()
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(folder, exist_ok=True)  # the failed download made it
    url = MobileNet_V3_Small_Weights.DEFAULT.url
    torch.save(state, os.path.join(folder, os.path.basename(url)))
    model = dv.load_model(name)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    info = dv.model_info(model)
    assert (info.name, info.weights, info.trained) == (name, "imagenet", True)
    from deconvviz.data.zoo import class_names

    assert class_names(model)[:2] == ["tench", "goldfish"]
    assert dv.load_model(name, weights=None).training is False


def test_show_draws_a_torchvision_model(tmp_path):
    out = tmp_path / "grid.png"
    proc = invoke("show", "--model", "torchvision:mobilenet_v3_small", "--layer", "features.2",
                  "--top", 2, "--weights", "none", "--method", "guided", "--out", out, CHELSEA)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_a_long_model_name_wraps_the_title_inside_a_small_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deconvviz.figures.base import fitted

    title = "torchvision:efficientnet_v2_s features.3.1 (guided, max) - chelsea.png - " \
            "untrained weights"
    fig = Figure(figsize=(4.5, 3))
    text = fig.suptitle(fitted(title, fig, 8.5), fontsize=8.5)
    box = text.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert "\n" in text.get_text() and box.x0 >= 0 and box.x1 <= fig.bbox.x1
    assert fitted("vgg16 conv3_3 (max) - chelsea.png", fig, 8.5) == \
        "vgg16 conv3_3 (max) - chelsea.png"  # short titles stay as they were
