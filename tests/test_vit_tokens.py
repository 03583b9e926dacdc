"""A vision transformer's tokens read on the patch grid (issue 38, items 1 and 2): the layer
table, the reading against the model's own output, the projections against autograd, the
receptive fields stated, the refusals, and every analysis that takes a layer, from Python.
The command line: tests/test_vit_cli.py."""
import pytest
import torch
from conftest import assert_untouched, snapshot
from torch import nn
from torchvision import models

import deconvviz as dv
from deconvviz.errors import ArgumentError, UnsupportedOpError

LAYER = "encoder.layers.encoder_layer_1"
TOL = 1e-10  # float64: the projections are autograd's own arithmetic, in another order


def tiny_vit(dtype=torch.float64):
    """torchvision's VisionTransformer at 32 px: 8 px patches on a 4x4 grid, a class token.
    Its head starts at zero (torchvision's init): drawn here, so that logits are not 0."""
    torch.manual_seed(0)
    model = models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                     hidden_dim=16, mlp_dim=32)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.to(dtype).eval()


def tiny_deit(**options):
    """timm's DeiT with a distillation token (``cls``, ``dist``), or another timm ViT."""
    import timm

    torch.manual_seed(0)
    name = options.pop("name", "deit_tiny_distilled_patch16_224")
    return timm.create_model(name, pretrained=False, img_size=32, patch_size=8, depth=2,
                             embed_dim=24, num_heads=2, **options).double().eval()


def tokens_of(model, layer, x):
    """The layer's output ``[N, T, C]``, by a hook (the oracle's own forward)."""
    out = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: out.setdefault("tokens", o))
    try:
        model(x)
    finally:
        handle.remove()
    return out["tokens"]


def rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def test_the_layer_table_reads_tokens_on_the_patch_grid():
    table = {layer.path: layer for layer in dv.list_layers(tiny_vit(), all_modules=True)}
    assert table["conv_proj"].shape_label == "16x4x4"
    encoder = [p for p in table if p.startswith("encoder.layers.encoder_layer_")
               and p.count(".") == 2]
    assert encoder == ["encoder.layers.encoder_layer_0", LAYER]
    assert all(table[p].shape_label == "16x4x4 +cls" for p in encoder)
    assert table["encoder.layers.encoder_layer_0.mlp.0"].shape_label == "32x4x4 +cls"
    assert table[LAYER].features == 16 and table[LAYER].tokens.prefix == ("cls",)
    assert table["heads.head"].shape == (1000,) and table["heads.head"].tokens is None
    deit = {layer.path: layer for layer in dv.list_layers(tiny_deit())}
    assert deit["blocks.1"].shape_label == "24x4x4 +cls +dist"
    registers = {layer.path: layer for layer in dv.list_layers(tiny_deit(
        name="vit_tiny_patch16_224", reg_tokens=2))}
    assert registers["blocks.1"].tokens.prefix == ("cls", "reg0", "reg1")
    assert registers["blocks.1"].shape_label == "24x4x4 +cls +2 reg"
    plain = {layer.path: layer for layer in dv.list_layers(tiny_deit(
        name="vit_tiny_patch16_224", class_token=False, global_pool="avg"))}
    assert plain["blocks.1"].shape_label == "24x4x4" and plain["blocks.1"].tokens.prefix == ()


@pytest.mark.parametrize("build, layer, named", [(tiny_vit, LAYER, 1),
                                                 (tiny_deit, "blocks.1", 2)])
def test_the_reading_is_the_tokens_row_by_row(build, layer, named):
    model = build()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    rec = dv.Projector(model).record(x, layer)
    tokens = tokens_of(model, layer, x)  # [2, named + 16, C]
    act = rec.activations[layer]
    assert act.shape == (2, tokens.shape[2], 4, 4)
    # the token of patch (row 2, column 1) is row named + 2 * 4 + 1 (not bit for bit:
    # without autograd, torch's attention takes its fused path)
    assert rel(act[:, :, 2, 1], tokens[:, named + 9]) <= TOL
    assert rel(act[:, :, 2, 1], tokens[:, named + 8]) > 1e-3  # the neighbour: another token
    assert rel(rec.named_tokens[layer], tokens[:, :named]) <= TOL


@pytest.mark.parametrize("build, layer", [(tiny_vit, LAYER), (tiny_deit, "blocks.1")])
def test_a_token_units_gradient_is_autograds(build, layer):
    model = build()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    net = dv.Gradient(model)
    got = net.project(x, layer, features=5)  # each image's strongest patch of feature 5
    xx = x.clone().requires_grad_(True)
    tokens = tokens_of(model, layer, xx)
    named = tokens.shape[1] - 16
    patches = tokens[:, named:, 5]
    best = patches.detach().argmax(1)
    value = patches.gather(1, best[:, None])[:, 0]
    (expected,) = torch.autograd.grad((value * value.detach()).sum(), xx, retain_graph=True)
    assert rel(got, expected) <= TOL
    assert rel(got, expected * (1 + 1e-12)) <= TOL  # a perturbation inside the tolerance
    # off by one token (the class token forgotten): far outside it
    shifted = tokens[torch.arange(2), named - 1 + best, 5]
    (wrong,) = torch.autograd.grad((shifted * shifted.detach()).sum(), xx, retain_graph=True)
    assert rel(got, wrong) > 1e-3
    # the class token as a position of its own
    cls = net.project(x, layer, features=[5, 7], token="cls")
    (expected,) = torch.autograd.grad((tokens[:, 0, 7] * tokens[:, 0, 7].detach()).sum(), xx)
    assert rel(cls[:, 1], expected) <= TOL


@pytest.mark.parametrize("method", ["deconvnet", "gradient"])
def test_several_features_per_image_through_timms_attention(method):
    # timm's attention puts q, k and v first (permute(2, 0, 3, 1, 4), then unbind): the K
    # seeds of each image are laid out along its batch axis there, not the first one
    model = tiny_deit()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    net = dv.Projector(model, method=method)
    together = net.project(x, "blocks.1", features=[3, 5, 7])
    for k, feature in enumerate([3, 5, 7]):
        assert rel(together[:, k], net.project(x, "blocks.1", features=feature)) <= 1e-12


def test_the_receptive_field_is_the_patch_then_the_whole_image():
    net = dv.Projector(tiny_vit())
    before, after = net.layer("encoder.dropout"), net.layer(LAYER)
    assert (before.rf_size, before.rf_stride, before.whole_image) == (8, 8, None)
    assert net.layer("encoder.layers.encoder_layer_0.ln_1").rf_size == 8  # per token
    assert after.geometry is None and after.rf_size == 32
    assert "mixed by the attention in encoder.layers.encoder_layer_0.self_attention" \
        in after.whole_image
    note = net.reverse_pass(LAYER).cone_note
    assert "sees the whole image" in note and "self_attention" in note
    assert "sees its patch (8x8 px)" in net.reverse_pass("encoder.dropout").cone_note
    deit = dv.Projector(tiny_deit()).layer("blocks.0.attn")
    assert "attention in blocks.0.attn" in deit.whole_image


class Tokenised(nn.Module):
    """Tokens with no patch grid: a linear map of the whole image cut into rows."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3 * 16 * 16, 8 * 12)
        self.mix = nn.Linear(12, 12)

    def forward(self, x):
        return self.mix(self.embed(x.flatten(1)).reshape(-1, 8, 12))


def test_refusals_name_the_reason(tmp_path):
    model = Tokenised().eval()
    before = snapshot(model)
    layer = dv.Projector(model).layer("mix", (16, 16))
    assert layer.features is None and "found no patch grid" in layer.no_features
    with pytest.raises(UnsupportedOpError, match="found no patch grid"):
        dv.Deconvnet(model).project(torch.randn(1, 3, 16, 16), "mix", features=0)
    assert_untouched(model, before)
    vit = tiny_vit(torch.float32)
    before = snapshot(vit)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ArgumentError, match="view 'crop'.*mixed by the attention in "
                                            "encoder.layers.encoder_layer_0.self_attention"):
        dv.show(vit, x, layer=LAYER, top=2, view="crop", out=tmp_path / "a.png")
    with pytest.raises(ArgumentError, match="no token 'dist'; its named tokens are cls"):
        dv.project(vit, x, layer=LAYER, token="dist", top=2)
    with pytest.raises(ArgumentError, match="has no named tokens"):
        dv.project(vit, x, layer="conv_proj", token="cls", top=2)
    assert_untouched(vit, before)
    assert dv.show(vit, x, layer="encoder.dropout", top=2, view="crop",
                   out=tmp_path / "b.png").written  # the patch: a field to crop to


def test_every_analysis_takes_a_token_layer(tmp_path):
    from deconvviz.data.synthetic import make_shapes
    from deconvviz.data.zoo import Preprocessing

    vit = tiny_vit(torch.float32)
    before = snapshot(vit)
    x = torch.randn(1, 3, 32, 32)
    shown = dv.project(vit, x, layer=LAYER, top=3)
    assert len(shown) == 3 and shown.positions.max() < 4 and shown.whole_image
    at_cls = dv.project(vit, x, layer=LAYER, token="cls", top=2)
    assert at_cls.token == "cls" and "at the cls token" in at_cls.title
    make_shapes(tmp_path / "photos", per_class=1, size=32, seed=0)
    scan = dv.scan(vit, str(tmp_path / "photos"), layers=[LAYER], hits=2, progress=False,
                   preprocessing=Preprocessing(resize_size=32, crop_size=32))
    assert scan.histogram(LAYER).shape[0] == 16
    assert all(hit.y < 4 and hit.x < 4 for hit in scan.top(LAYER, 3))
    layer = dv.Projector(vit).layer(LAYER)  # past attention a hit is drawn as its patch
    assert layer.geometry is None and layer.hit_geometry.window(2, 3) == (16, 24, 8, 8)
    site = dv.atlas(scan, tmp_path / "atlas", model=vit, progress=False)
    assert (tmp_path / "atlas" / "index.html").exists() and "16 units" in repr(site)
    optimised = dv.feature_vis(vit, LAYER, features=[0, 1], steps=2, image_size=32)
    assert optimised.images.shape[:2] == (2, 1)
    check = dv.sanity_check(vit, x, layers=["encoder.layers.encoder_layer_1.mlp.0"],
                            methods=["gradient"])
    assert "1 layers randomised" in repr(check) or "1 layer" in repr(check)
    assert_untouched(vit, before)


def test_crp_carries_the_class_tokens_relevance():
    vit = tiny_vit()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    net = dv.Projector(vit, method="lrp")
    concepts = dv.crp(net, x, layer=LAYER, target=3)
    # the last block's relevance lives at the class token only (the head reads it): every
    # concept's heatmap together is the class's heatmap, all of it through that token
    rec = net.record(x, "")
    seed = torch.zeros_like(rec.activations[""])
    seed[0, 3] = rec.activations[""][0, 3]
    whole = net.project(x, "", signal=seed, recording=rec)
    assert rel(concepts.heatmaps.sum(1), whole) <= 1e-10
    upper = dv.layer_relevance(net, x, layer=LAYER, target=3)
    assert float(upper.relevance.abs().max()) == 0.0  # none on the patches
    assert torch.equal(upper.channel[0], upper.named_relevance[0, 0])  # all at the token
    assert rel(concepts.relevance, upper.channel) <= 1e-12


def test_vit_l_16_reads_alike():  # vit_b_32: tests/test_channel_axes.py
    with torch.device("meta"):  # shapes only: no weights drawn
        model = models.vit_l_16().eval()
    label = "1024x14x14 +cls"
    net = dv.Projector(model)
    last = f"encoder.layers.encoder_layer_{len(model.encoder.layers) - 1}"
    assert net.layer(last).shape_label == label
    assert net.layer("encoder.layers.encoder_layer_0.ln_1").rf_size == model.patch_size
