"""AttnLRP (``lrp_attn``) and CP-LRP (``lrp_cp``) on torchvision's ViT (issue 38, item 3):
each equals LXT 2.1 (tests/lxt_oracle.py) at the same rules and constants, CP-LRP conserves
relevance with the biases zero, and neither changes the model or leaves a hook behind.

The agreement runs on ViT-B/16's structure (12 layers, 12 heads, 16-px patches) at an eighth
of its width and 64 px, float64: the full ``vit_b_16`` at 224 px costs a minute of CPU on
both sides; ``DECONVVIZ_TEST_VIT=full`` runs it (benchmarks/README.md gives its numbers).
"""
import os
from dataclasses import replace

import pytest
import torch
import torchvision
from lrp_oracle import without_biases
from lxt_oracle import lxt_relevance

import deconvviz as dv
from deconvviz import method_table
from deconvviz.engine.precision import rel_error
from deconvviz.errors import ArgumentError

LXT = 1e-4  # relative max error against LXT, float64
CONSERVATION = 1e-4  # |input relevance / logit - 1|, biases zero, ε 1e-9
FULL = os.environ.get("DECONVVIZ_TEST_VIT") == "full"


def _vit_b16(seed=0):
    """ViT-B/16's structure (its width an eighth, 64 px unless FULL), random weights, the
    zero-initialised head drawn, float64."""
    torch.manual_seed(seed)
    if FULL:
        model = torchvision.models.vit_b_16(weights=None)
    else:
        model = torchvision.models.VisionTransformer(image_size=64, patch_size=16,
                                                     num_layers=12, num_heads=12,
                                                     hidden_dim=96, mlp_dim=384)
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)
    return model.double().eval()


def _small_vit(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                 num_heads=2, hidden_dim=16, mlp_dim=32)
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)
    return model.double().eval()


def _image(model, seed=1):
    torch.manual_seed(seed)
    return torch.randn(1, 3, model.image_size, model.image_size, dtype=torch.float64)


RULES = [("lrp_attn", "softmax"), ("lrp_cp", "conservative")]


@pytest.mark.agreement
@pytest.mark.parametrize("method,attention", RULES)
def test_equals_lxt_on_vit_b16(method, attention):
    model, x = _vit_b16(), None
    x = _image(model)
    with torch.no_grad():
        target = int(model(x).argmax())
    ours = dv.attribute(model, x, method=method, target=target).map
    theirs = lxt_relevance(model, x, target, attention=attention)
    assert rel_error(ours, theirs) <= LXT
    assert rel_error(ours, theirs) > 0  # two computations, not one


@pytest.mark.agreement
def test_the_gamma_rule_as_lxts_vit_example_equals_lxt():
    """LXT's examples/vit_torch.py: zennit's Gamma on the convolution (γ 0.25) and the linear
    layers (γ 0.05), CP-LRP inside attention."""
    gamma = replace(method_table.composites()["lrp_cp"], name="lrp_cp_gamma", conv="gamma",
                    linear="gamma", gamma=0.05, by_type={"Conv2d": ("gamma", {"gamma": 0.25})})
    method_table.register_composite(gamma)
    try:
        model = _vit_b16()
        x = _image(model)
        ours = dv.attribute(model, x, method="lrp_cp_gamma", target=3).map
    finally:
        dv.unregister_method("lrp_cp_gamma")  # the table's row and the engine's rule set
    theirs = lxt_relevance(model, x, 3, conv_gamma=0.25, lin_gamma=0.05)
    assert rel_error(ours, theirs) <= LXT
    assert rel_error(ours, lxt_relevance(model, x, 3, conv_gamma=0.25, lin_gamma=0.055)) > LXT


def test_the_lxt_tolerance_tells_neighbouring_constants_apart():
    """A little γ on LXT's linear layers, or the other attention rule, lies outside."""
    model = _small_vit()
    x = _image(model)
    ours = dv.attribute(model, x, method="lrp_cp", target=3).map
    assert rel_error(ours, lxt_relevance(model, x, 3)) <= LXT
    assert rel_error(ours, lxt_relevance(model, x, 3, lin_gamma=0.001)) > LXT
    assert rel_error(ours, lxt_relevance(model, x, 3, attention="softmax")) > LXT


def _without_any_bias(model):
    with torch.no_grad():
        without_biases(model)
        model.class_token.zero_()
        model.encoder.pos_embedding.zero_()
        for m in model.modules():
            if isinstance(m, torch.nn.MultiheadAttention):
                m.in_proj_bias.zero_()
    return model


@pytest.mark.parametrize("build", [_small_vit, _vit_b16], ids=["small", "vit_b16"])
def test_cp_lrp_conserves_with_the_biases_zero(build):
    model = _without_any_bias(build())
    x = _image(model)
    logits = model(x).detach()
    for target in (0, 5):
        relevance = dv.attribute(model, x, method="lrp_cp", target=target).map
        assert abs(float(relevance.sum() / logits[0, target]) - 1) <= CONSERVATION
    biased = build()  # the biases (and the position embedding) absorb relevance
    relevance = dv.attribute(biased, x, method="lrp_cp", target=0).map
    assert abs(float(relevance.sum() / biased(x).detach()[0, 0]) - 1) > CONSERVATION


def test_attnlrp_does_not_conserve_through_the_softmax():
    """AttnLRP's softmax rule x·(R − s·ΣR) keeps no sum (Achtibat et al. 2024, eq. 12's
    bias term): with every bias zero its input relevance still misses the logit, and by as
    much as LXT's does."""
    model = _without_any_bias(_small_vit())
    x = _image(model)
    logit = float(model(x)[0, 0])
    ours = dv.attribute(model, x, method="lrp_attn", target=0).map
    assert abs(float(ours.sum()) / logit - 1) > 0.01
    assert rel_error(ours, lxt_relevance(model, x, 0, attention="softmax")) <= LXT


def test_the_model_is_unchanged_and_hooks_are_gone_after_errors_too():
    model = _small_vit()
    x = _image(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dv.attribute(model, x, method="lrp_attn", target=1)
    with pytest.raises(ArgumentError):
        dv.attribute(model, x, method="lrp_attn", target=10_000)
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(model.encoder.layers[0].self_attention).forward is \
        torch.nn.MultiheadAttention.forward


def test_a_composite_names_its_attention_rule():
    cp = method_table.composites()["lrp_cp"]
    assert cp.attention == "conservative" and cp.linear == cp.conv == "epsilon"
    assert method_table.composites()["lrp_attn"] == replace(cp, name="lrp_attn",
                                                            title="AttnLRP",
                                                            attention="softmax")
    with pytest.raises(ArgumentError, match="conservative, softmax"):
        replace(cp, attention="held")


@pytest.mark.parametrize("name", ["deit", "swin"])
def test_cp_lrp_conserves_on_deit_and_swin_and_attnlrp_runs(name):
    """timm's DeiT (scaled_dot_product_attention, a distillation token) and torchvision's
    Swin (windowed attention, its softmax inside shifted_window_attention)."""
    from test_vit_methods import MODELS

    model = without_biases(MODELS[name]())
    with torch.no_grad():
        for path, p in model.named_parameters():
            if path in ("cls_token", "dist_token", "pos_embed") or "position_bias" in path:
                p.zero_()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    logits = model(x).detach()[:, 3]
    relevance = dv.attribute(model, x, method="lrp_cp", target=3).map.sum((1, 2, 3))
    assert (relevance / logits - 1).abs().max() <= CONSERVATION
    attn = dv.attribute(model, x, method="lrp_attn", target=3).map
    assert torch.isfinite(attn).all() and rel_error(attn.sum((1, 2, 3)), relevance) > 1e-3


class _Masked(torch.nn.Module):
    """Self-attention with a mask, which the written-out attention does not take."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, 4)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)
        self.register_buffer("mask", torch.zeros(16, 16, dtype=torch.bool))

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.attention(t, t, t, attn_mask=self.mask)[0].mean(1))


@pytest.mark.parametrize("method", ["lrp_cp", "lrp_attn", "chefer_gae"])
def test_a_masked_attention_is_refused_naming_the_mask(method):
    from deconvviz.errors import UnsupportedOpError

    model = _Masked().eval()
    with pytest.raises(UnsupportedOpError, match="with attn_mask is not written out"):
        dv.attribute(model, torch.randn(1, 3, 16, 16), method=method, target=0)
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
