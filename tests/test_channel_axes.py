"""A layer's features are its channels, whatever the memory layout: channels-last maps
(ConvNeXt's blocks, Swin's stages) are read channels first by the layer table, projections and
scans; token sequences (ViT) and windows of tokens (MaxViT) are refused with a sentence.

The sweep over torchvision's classifiers builds each on the meta device (no weights, no
arithmetic: only shapes), and takes its oracle from the modules themselves: a ``Conv2d``'s
``out_channels``, a ``BatchNorm2d``'s or ``GroupNorm``'s channels, a ``LayerNorm``'s normalised
size, a ``Linear``'s ``out_features``. By default it takes the smallest model of each family
(the members of a family share their builder's code and differ in widths and depths);
``DECONVVIZ_TEST_CLASSIFIERS=all`` takes every one of them (80 models, about two minutes
here).
"""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import invoke
from torch import nn
from torchvision import models

import deconvviz as dv
from deconvviz.engine.precision import rel_error

# One small model per family, the cheapest that cover every layout: maps (most), channels
# last (ConvNeXt, Swin), tokens (ViT), constants of the model (Swin V2's position bias).
# MaxViT (windows of tokens, 6 s here), DenseNet, GoogLeNet, MNASNet, AlexNet and the bigger
# members of each family run with DECONVVIZ_TEST_CLASSIFIERS=all.
FAMILIES = ["convnext_tiny", "efficientnet_b0", "inception_v3", "mobilenet_v3_small",
            "regnet_x_400mf", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t",
            "swin_v2_t", "vgg11", "vit_b_32"]
# Families with neither tokens nor windows: every layer has features.
MAPS_ONLY = {"alexnet", "convnext", "densenet", "efficientnet", "googlenet", "inception",
             "mnasnet", "mobilenet", "regnet", "resnet", "resnext", "shufflenet", "squeezenet",
             "vgg", "wide_resnet"}
ALL = os.environ.get("DECONVVIZ_TEST_CLASSIFIERS") == "all"
NAMES = sorted(models.list_models(module=models)) if ALL else FAMILIES


def _declared_channels(module):
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.BatchNorm2d):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0]
    if isinstance(module, nn.Linear):
        return module.out_features
    return None


def _build(name):
    if name.startswith("regnet"):  # its initialiser cannot run on the meta device
        return models.get_model(name).eval()
    with torch.device("meta"):
        return models.get_model(name).eval()


@pytest.mark.parametrize("name", NAMES)
def test_features_are_channels_or_refused(name):
    model = _build(name)
    layers = dv.list_layers(model, all_modules=True)
    modules = dict(model.named_modules())
    checked = 0
    for layer in layers:
        if layer.features is None:
            assert layer.no_features and repr(layer.path) in layer.no_features
            assert not name.startswith(tuple(MAPS_ONLY)), (layer.path, layer.no_features)
            continue
        declared = _declared_channels(modules.get(layer.path))
        if declared is not None:
            assert layer.features == declared, (layer.path, layer.shape)
            checked += 1
    assert checked >= 2  # ViT: its patch embedding and its head


class TinyNeXt(nn.Module):
    """ConvNeXt's idiom: a stem, then LayerNorm and an MLP on the channels-last map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 4, stride=4)
        self.norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, 12)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)  # [N, 8, 8, 12] for a 32-px input
        x = F.gelu(self.fc(self.norm(x)))
        return x.permute(0, 3, 1, 2)


def test_a_channels_last_layer_projects_its_channels():
    torch.manual_seed(0)
    model = TinyNeXt().double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    net = dv.Gradient(model)
    layer = net.layer("fc", (32, 32))
    assert (layer.shape, layer.features, layer.channels_last) == ((12, 8, 8), 12, True)
    # feature 10: a channel (there are only 8 rows); by hand, with autograd
    xx = x.clone().requires_grad_(True)
    out = model.fc(model.norm(model.stem(xx).permute(0, 2, 3, 1)))  # [N, 8, 8, 12]
    seed = torch.zeros_like(out)
    seed[..., 10] = out[..., 10].detach()
    (expected,) = torch.autograd.grad(out, xx, seed)
    got = net.project(x, "fc", features=10, mode="map")
    assert rel_error(got, expected) <= 1e-12
    act = net.record(x, "fc").activations["fc"]
    assert act.shape == (2, 12, 8, 8)
    assert torch.equal(act, out.detach().permute(0, 3, 1, 2))
    # the strongest unit of feature 10, projected in its cone and by the full-size pass
    cone = net.project(x, "fc", features=10, cone=True)
    full = net.project(x, "fc", features=10, cone=False)
    assert float((cone - full).abs().max() / full.abs().max()) <= 1e-12


def test_a_scan_of_a_channels_last_layer_keeps_channels(tmp_path):
    from deconvviz.data.synthetic import make_shapes

    make_shapes(tmp_path / "photos", per_class=1, size=32, seed=0)
    model = TinyNeXt().eval()
    result = dv.scan(model, str(tmp_path / "photos"), layers=["fc"], hits=2, progress=False,
                     preprocessing=dv.data.zoo.Preprocessing(resize_size=32, crop_size=32))
    assert result.histogram("fc").shape[0] == 12
    assert len(result.top("fc", 11)) == 2
    assert all(hit.y < 8 and hit.x < 8 for hit in result.top("fc", 11))


def test_a_vits_tokens_are_read_on_the_patch_grid():
    # the refusal of tokens with no patch grid: tests/test_vit_tokens.py
    with torch.device("meta"):
        model = models.vit_b_32().eval()
    layer = dv.Projector(model).layer("encoder.layers.encoder_layer_5")
    assert (layer.features, layer.shape, layer.tokens.prefix) == (768, (768, 7, 7), ("cls",))
    assert layer.no_features is None and layer.shape_label == "768x7x7 +cls"


def test_layers_lists_swin_channels_first():
    result = invoke("layers", "--model", "torchvision:swin_t", "--all")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.split()[1] == "features.3")
    assert "192x28x28" in row  # not 28x28x192
