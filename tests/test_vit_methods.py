"""Methods through attention and LayerNorm on vision transformers (issue 38, item 3).

- The gradient, guided backprop and the deconvnet of a class on a small torchvision ViT, a
  tiny timm DeiT (with its distillation token) and a tiny torchvision Swin, each equal to an
  autograd oracle under the stated conventions (docs/methods.md): at GELU the deconvnet
  passes ``relu(signal)``, guided backprop ``GELU'(x) * relu(signal)``; LayerNorm, softmax,
  attention and every other op their true gradient (tests/modern_oracle.py's rules).
- Attention rollout (Abnar & Zuidema 2020) and Chefer et al.'s GAE (ICCV 2021) against the
  authors' recipes written out below, reading the attention weights with hooks (torch's own
  ``need_weights=True`` path for torchvision's ViT, timm's unfused attention for DeiT).
"""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from modern_oracle import ModernRules
from oracle import DeconvRules

import deconvviz as dv
from deconvviz.engine.precision import rel_error
from deconvviz.errors import ArgumentError

TOLERANCE = 1e-6  # relative max error, float64 on both sides
SIZE = 32


def _vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2,
                                                 num_heads=2, hidden_dim=16, mlp_dim=32)
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision draws it as zeros
    return model.double().eval()


def _deit():
    timm = pytest.importorskip("timm")  # an optional dependency (tests/test_external_models.py)
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False,
                             img_size=SIZE, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                             num_classes=10).double().eval()


def _swin():
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
        num_classes=10).double().eval()


MODELS = {"vit": _vit, "deit": _deit, "swin": _swin}


def _images(n=2):
    torch.manual_seed(1)
    return torch.randn(n, 3, SIZE, SIZE, dtype=torch.float64)


def _oracle(model, x, target, method):
    """The gradient of the class logit with the method's backward rules (ReLUs by
    tests/oracle.py's, GELU and the other activations by tests/modern_oracle.py's)."""
    xx = x.clone().requires_grad_(True)
    rules = ModernRules(method) if method != "gradient" else contextlib.nullcontext()
    with rules, DeconvRules(method), torch.enable_grad():
        score = model(xx)[:, target].sum()
    return torch.autograd.grad(score, xx)[0]


@pytest.mark.agreement
@pytest.mark.parametrize("name", MODELS)
def test_reverse_passes_equal_their_oracles(name):
    model, x = MODELS[name](), _images()
    maps = {}
    for method in ("gradient", "guided", "deconvnet"):
        maps[method] = dv.attribute(model, x, method=method, target=3).map
        assert rel_error(maps[method], _oracle(model, x, 3, method)) <= TOLERANCE
    # the conventions matter here: each method's map lies far outside the others' tolerance
    assert rel_error(maps["guided"], maps["gradient"]) > 1e3 * TOLERANCE
    assert rel_error(maps["deconvnet"], maps["guided"]) > 1e3 * TOLERANCE


# -- the authors' recipes, on attention weights read with hooks -------------------------
@contextlib.contextmanager
def _weights_of(model):
    """A copy of ``model`` whose attention layers keep their weights (in the graph:
    ``[N, heads, T, T]`` or ``[N * heads, T, T]``) in the list yielded with it."""
    model = copy.deepcopy(model)
    kept = []
    if isinstance(model, torchvision.models.VisionTransformer):
        for layer in model.encoder.layers:
            attention = layer.self_attention
            original = attention.forward

            def forward(q, k, v, need_weights=False, original=original, **kwargs):
                out, w = original(q, k, v, need_weights=True, average_attn_weights=False)
                # torch returns a view made after its bmm; its base is the softmax it used
                kept.append(w._base)
                return out, None
            attention.forward = forward
    else:  # timm: the unfused attention, its weights at attn_drop (as Chefer et al.'s code)
        for block in model.blocks:
            block.attn.fused_attn = False
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: kept.append(o))
    yield model, kept


def _rollout(model, x):
    """Abnar & Zuidema's rollout as jacobgil/vit-explain writes it (mean over heads, no
    discarding): ``(A + I) / 2``, rows renormalised, multiplied layer after layer."""
    with _weights_of(model) as (copied, kept), torch.enable_grad():  # no fused fast path
        copied(x)
    tokens = kept[0].shape[-1]
    result = torch.eye(tokens, dtype=x.dtype).expand(x.shape[0], tokens, tokens)
    for w in kept:
        a = (w.reshape(x.shape[0], -1, tokens, tokens).mean(1) + torch.eye(tokens)) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result


def _gae(model, x, target, rectify=True):
    """Chefer et al.'s ``generate_relevance`` (Transformer-MM-Explainability's ViT code),
    image by image: ``R += (grad * cam).clamp(min=0).mean(heads) @ R``."""
    rows = []
    for image in x:
        with _weights_of(model) as (copied, cams), torch.enable_grad():
            score = copied(image[None])[0, target]
        grads = torch.autograd.grad(score, cams)
        r = torch.eye(cams[0].shape[-1], dtype=x.dtype)
        for cam, grad in zip(cams, grads):
            weighted = (grad * cam).reshape(-1, *cam.shape[-2:])  # avg_heads's reshape
            r = r + (weighted.clamp(min=0) if rectify else weighted).mean(0) @ r
        rows.append(r)
    return torch.stack(rows)


def _upsampled(flow, prefix, x):
    side = int((flow.shape[-1] - prefix) ** 0.5)
    grid = flow[:, 0, prefix:].reshape(-1, 1, side, side)
    up = F.interpolate(grid, scale_factor=x.shape[-1] // side, mode="bilinear")
    low = up.flatten(1).min(1).values[:, None, None, None]
    up = up - low
    return up / (up.flatten(1).max(1).values[:, None, None, None] + 1e-7)


@pytest.mark.agreement
@pytest.mark.parametrize("name,prefix", [("vit", 1), ("deit", 2)])
def test_rollout_and_gae_equal_the_authors_recipes(name, prefix):
    model, x = MODELS[name](), _images()
    rollout = dv.attribute(model, x, method="attention_rollout", target=3).map
    assert rollout.shape == (2, 1, SIZE, SIZE)
    assert rel_error(rollout, _upsampled(_rollout(model, x), prefix, x)) <= TOLERANCE
    gae = dv.attribute(model, x, method="chefer_gae", target=3).map
    assert rel_error(gae, _upsampled(_gae(model, x, 3), prefix, x)) <= TOLERANCE
    # another class, another map (rollout reads no gradient: the same)
    assert rel_error(dv.attribute(model, x, method="chefer_gae", target=5).map, gae) > 1e-3
    assert torch.equal(dv.attribute(model, x, method="attention_rollout", target=5).map,
                       rollout)


def test_the_tolerance_tells_the_recipes_apart():
    """The class token's row of rollout against the first patch's, or GAE without its
    rectification: both outside the tolerance."""
    model, x = _vit(), _images(1)
    rollout = dv.attribute(model, x, method="attention_rollout", target=3).map
    assert rel_error(rollout, _upsampled(_rollout(model, x)[:, 1:], 1, x)) > TOLERANCE
    gae = dv.attribute(model, x, method="chefer_gae", target=3).map
    assert rel_error(gae, _upsampled(_gae(model, x, 3), 1, x)) <= TOLERANCE
    assert rel_error(gae, _upsampled(_gae(model, x, 3, rectify=False), 1, x)) > TOLERANCE


def test_windowed_attention_is_refused_and_the_model_unchanged():
    model, x = _swin(), _images(1)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ArgumentError, match="windows, as Swin's"):
        dv.attribute(model, x, method="chefer_gae", target=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


# -- the CAM family on a token layer, read on its patch grid ---------------------------
CAM_TOLERANCE = 1e-5  # as tests/test_cams.py: after the same [0, 1] scaling


def _reshape_transform(tokens, side=SIZE // 8, transpose=False):
    """pytorch-grad-cam's ViT recipe: drop the class token, the rest on the grid."""
    grid = tokens[:, 1:, :].reshape(tokens.size(0), side, side, tokens.size(2))
    grid = grid.transpose(1, 2) if transpose else grid
    return grid.transpose(2, 3).transpose(1, 2)


@pytest.mark.agreement
def test_cams_on_a_token_layer_equal_pytorch_grad_cam_with_its_reshape():
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = _vit(), _images()
    layer = "encoder.layers.encoder_layer_0"
    targets = [ClassifierOutputTarget(3)] * len(x)

    def theirs(cam_class, **kwargs):
        with cam_class(model=model, target_layers=[model.get_submodule(layer)],
                       reshape_transform=lambda t: _reshape_transform(t, **kwargs)) as cam:
            return torch.as_tensor(cam(input_tensor=x, targets=targets))
    for method, cam_class in [("gradcam", GradCAM), ("hirescam", HiResCAM),
                              ("gradcam_plus_plus", GradCAMPlusPlus), ("layercam", LayerCAM),
                              ("xgradcam", XGradCAM)]:
        ours = dv.attribute(model, x, method=method, target=3, cam_layer=layer).map[:, 0]
        assert (ours - theirs(cam_class)).abs().max() <= CAM_TOLERANCE
    # the grid read column by column instead of row by row lies outside
    assert (ours - theirs(XGradCAM, transpose=True)).abs().max() > CAM_TOLERANCE
    with pytest.raises(ArgumentError, match="Ablation-CAM"):
        dv.attribute(model, x, method="ablationcam", target=3, cam_layer=layer)
