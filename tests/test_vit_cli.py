"""A vision transformer's token layers from the command line (issue 38): ``layers``, ``show``
(a unit's strongest patch, the class token), ``scan``, ``atlas``, ``optimize`` and ``crp`` on
an encoder layer of a small torchvision ViT, registered as a zoo model for the test; the
refusal of the cropped view past attention as one ``error:`` line."""
import pytest
import torch
from conftest import invoke
from test_vit_tokens import LAYER, tiny_vit

import deconvviz as dv
from deconvviz.data.zoo import _registry
from deconvviz.data.zoo._api import checkpoint_payload
from deconvviz.data.zoo._registry import ModelSpec

NAME = "vit_tiny_test"


@pytest.fixture
def vit(tmp_path):
    """The ViT as a zoo model (``--model vit_tiny_test``) and a checkpoint of its weights
    that says its input is 32 px (``--weights FILE``); unregistered afterwards."""
    model = tiny_vit(torch.float32)
    _registry.register_model(ModelSpec(
        name=NAME, build=lambda weights=None, num_classes=1000: tiny_vit(torch.float32),
        aliases={}))
    path = tmp_path / "vit.pt"
    torch.save(checkpoint_payload(model, NAME, preprocessing=dv.data.zoo.Preprocessing(
        resize_size=32, crop_size=32)), path)
    try:
        yield ["--model", NAME, "--weights", str(path)]
    finally:
        _registry._REGISTRY.pop(NAME, None)


def test_the_commands_take_a_token_layer(vit, tmp_path, chelsea):
    from deconvviz.data.synthetic import make_shapes

    listed = invoke("layers", "--model", NAME, "--input-size", "32", "--all")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[1] == LAYER)
    assert row.split()[2:6] == ["16x4x4", "+cls", "32", "-"]
    assert "+cls (+dist, +N reg) are the named tokens" in listed.stdout
    shown = invoke("show", *vit, "--layer", LAYER, "--top", "2", "--dpi", "40", "--out", tmp_path / "s.png",
                   chelsea)
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "s.png").exists()
    cls = invoke("show", *vit, "--layer", LAYER, "--token", "cls", "--top", "2", "--dpi", "40",
                 "--out", tmp_path / "c.png", chelsea)
    assert cls.returncode == 0 and (tmp_path / "c.png").exists(), cls.stderr
    crop = invoke("show", *vit, "--layer", LAYER, "--view", "crop", "--out",
                  tmp_path / "x.png", chelsea)
    assert crop.returncode == 2 and not (tmp_path / "x.png").exists()
    assert crop.stderr.count("error:") == 1 and "mixed by the attention in " \
        "encoder.layers.encoder_layer_0.self_attention" in crop.stderr
    make_shapes(tmp_path / "photos", per_class=1, size=32, seed=0)
    scanned = invoke("scan", *vit, "--layers", LAYER, "--hits", "2", "--out",
                     tmp_path / "scan.pt", tmp_path / "photos")
    assert scanned.returncode == 0, scanned.stderr
    site = invoke("atlas", tmp_path / "scan.pt", "--out", tmp_path / "atlas")
    assert site.returncode == 0 and (tmp_path / "atlas" / "index.html").exists(), site.stderr
    optimised = invoke("optimize", *vit, "--layer", LAYER, "--features", "0-1", "--steps",
                       "2", "--image-size", "32", "--out", tmp_path / "fv.png")
    assert optimised.returncode == 0 and (tmp_path / "fv.png").exists(), optimised.stderr
    concepts = invoke("crp", *vit, "--layer", LAYER, "--top", "2", "--scan",
                      tmp_path / "scan.pt", "--dpi", "40", "--out", tmp_path / "crp.png",
                      chelsea)
    assert concepts.returncode == 0 and (tmp_path / "crp.png").exists(), concepts.stderr


def test_layers_lists_vit_b_16s_encoder_layers_on_the_patch_grid():
    listed = invoke("layers", "--model", "torchvision:vit_b_16")  # random weights: no download
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line.split()[2:] for line in listed.stdout.splitlines()[1:]
            if line.startswith("-")}
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    assert all(rows[b][:2] == ["768x14x14", "+cls"] for b in blocks)
    assert rows["conv_proj"] == ["768x14x14", "16", "16"]  # the patch embedding: the patch
    assert rows["encoder.layers.encoder_layer_0.ln_1"][2:] == ["16", "16"]  # before attention
    assert rows["encoder.layers.encoder_layer_0"][2:] == ["224", "-"]  # after it: the image
