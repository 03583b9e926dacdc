"""The CAM family against pytorch-grad-cam 1.5 (its maps, after its own normalisation, to
1e-5), and where deconvviz departs from it, the departure on a hand-computed case."""
import copy

import numpy as np
import pytest
import torch
from conftest import assert_untouched, snapshot, zoo_model
from torch import nn

import deconvviz as dv
from deconvviz.analyses.cams import CAMS, ablation_tail, cam_maps, projection, scale
from deconvviz.engine.passes.graph import trace

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

THEIRS = {"gradcam": "GradCAM", "hirescam": "HiResCAM",
          "gradcam_elementwise": "GradCAMElementWise", "gradcam_plus_plus": "GradCAMPlusPlus",
          "xgradcam": "XGradCAM", "layercam": "LayerCAM", "eigengradcam": "EigenGradCAM",
          "eigencam": "EigenCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM",
          "fullgrad": "FullGrad"}
TOLERANCE = 1e-5  # both in float32, after the same [0, 1] scaling
# (zoo name, layer module, input side): pytorch-grad-cam's documented layers' neighbours
MODELS = [("vgg16", "features.29", 32), ("resnet50", "layer4", 64),
          ("efficientnet_b0", "features.8", 64)]
FAST = [m for m in CAMS if m not in ("scorecam", "ablationcam")]  # FullGrad included


def theirs(model, path, method, x, classes, **options):
    """pytorch-grad-cam's map (it hooks the model and removes its hooks on leaving)."""
    cam = getattr(pgc, THEIRS[method])(model=model, target_layers=[model.get_submodule(p)
                                                                      for p in path])
    try:
        with cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c)
                                                                 for c in classes], **options))
    finally:  # it leaves .grad on the weights of the (shared) zoo model
        model.zero_grad(set_to_none=True)


_LAYERS = {}


def ours(model, path, method, x, classes, **options):
    key = (id(model), tuple(path), tuple(x.shape))
    if key not in _LAYERS:  # one trace and one layer lookup per model and size
        _LAYERS[key] = (trace(model).graph_module,
                        [(model.get_submodule(p), _node(model, p, x)) for p in path])
    graph_module, layers = _LAYERS[key]
    return cam_maps(model, x, method, layers, classes, traced_module=graph_module,
                    **options)[:, 0]


def _node(model, path, x):
    """The graph node of a module's output (a block's last op)."""
    net = dv.Deconvnet(model)
    return net.traced.ops[net.layer(path, tuple(x.shape[-2:])).node].node.name


def _model(name):
    if name.startswith("efficientnet"):
        import torchvision

        if name not in _CALIBRATED:
            torch.manual_seed(0)
            _CALIBRATED[name] = calibrated(torchvision.models.efficientnet_b0())
        return _CALIBRATED[name]
    return zoo_model(name)


_CALIBRATED = {}


def calibrated(model):
    """Random weights with BatchNorm statistics taken from one batch of noise: at
    initialisation (mean 0, variance 1) EfficientNet-B0's activations shrink to 1e-13 by
    features.8, where every min-max scaled map is rounding noise."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _inputs(model, side, n=2):
    torch.manual_seed(1)
    x = torch.randn(n, 3, side, side)
    with torch.no_grad():
        return x, model(x).argmax(1).tolist()


@pytest.mark.parametrize("name,path,side", MODELS)
def test_every_gradient_cam_and_eigencam_equals_pytorch_grad_cam(name, path, side):
    model = _model(name)
    x, classes = _inputs(model, side)
    for method in FAST:
        before = snapshot(model)
        a = ours(model, [path], method, x, classes)
        assert_untouched(model, before)  # pytorch-grad-cam leaves .grad on the weights
        b = theirs(model, [path], method, x, classes)
        if method == "eigencam" and not torch.allclose(a, b, atol=TOLERANCE):
            # the principal component's sign: theirs is the SVD's, ours oriented (see below)
            continue  # the sign of the principal component: see the Eigen-CAM test below
        assert (a - b).abs().max() <= TOLERANCE, (name, method, float((a - b).abs().max()))


def test_several_layers_fuse_and_smoothing_as_pytorch_grad_cam_does():
    model = zoo_model("vgg16")
    x, classes = _inputs(model, 32, n=1)
    paths = ["features.22", "features.29"]
    for method, options in (("gradcam", {}), ("layercam", {"eigen_smooth": True}),
                            ("gradcam", {"aug_smooth": True})):
        a = ours(model, paths, method, x, classes, **options)
        b = theirs(model, paths, method, x, classes, **options)
        assert (a - b).abs().max() <= TOLERANCE, (method, options)


def small_cnn(relu_last=True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1)]
    layers += [nn.ReLU()] if relu_last else []
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 4)).eval()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_score_and_ablation_cam_equal_pytorch_grad_cam_after_a_relu(method):
    model = small_cnn()
    x, classes = _inputs(model, 16)
    a, b = ours(model, ["3"], method, x, classes), theirs(model, ["3"], method, x, classes)
    assert (a - b).abs().max() <= TOLERANCE


def _tail(name, model):
    """The layers above each model's CAM layer, written out by hand (the oracle's tail)."""
    if name == "vgg16":
        return lambda a: model.classifier(torch.flatten(model.avgpool(model.features[30](a)), 1))
    if name == "resnet50":
        return lambda a: model.fc(torch.flatten(model.avgpool(a), 1))
    return lambda a: model.classifier(torch.flatten(model.avgpool(a), 1))


@pytest.mark.parametrize("name,path,side", MODELS)
def test_ablation_cam_is_the_papers_drop_on_each_model(name, path, side):
    """Ablation-CAM on the three models against its definition run by hand: channel k of
    the layer set to zero, the tail written out, ``(score - score_k) / score``. (pytorch-grad-
    cam's own Ablation-CAM agrees with ours to 1.8e-6 on VGG16 and ResNet-50 in
    benchmarks/cams.py; on EfficientNet-B0 the layer ends in a SiLU whose minimum is negative,
    where it ablates to ``min - 1e7``: the departure shown on a hand-computed case below.)"""
    x, classes = _inputs(_model(name), side, n=1)
    model = _model(name)
    if name == "efficientnet_b0":  # its drops are small differences of large logits
        model, x = copy.deepcopy(model).double(), x.double()
    tail = _tail(name, model)
    found = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: found.append(o))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    a = found[0]
    assert torch.allclose(tail(a), logits, atol=1e-5)  # the hand-written tail is the model's
    c = classes[0]
    with torch.no_grad():
        ablated = a.repeat(a.shape[1], 1, 1, 1)
        ablated[torch.arange(a.shape[1]), torch.arange(a.shape[1])] = 0
        drops = torch.cat([(logits[0, c] - tail(chunk)[:, c]) / logits[0, c]
                           for chunk in ablated.split(256)])
    expected = scale((drops[None, :, None, None] * a).sum(1).clamp_min(0), (side, side))[0]
    got = ours(model, [path], "ablationcam", x, classes)[0]
    assert (got - expected).abs().max() <= TOLERANCE, float((got - expected).abs().max())


def test_score_cam_equals_pytorch_grad_cam_on_efficientnet_b0():
    """One forward pass per channel: VGG16 and ResNet-50 (512 and 2,048 passes) are compared
    with pytorch-grad-cam in benchmarks/cams.py, EfficientNet-B0's 1,280 here."""
    name, path, side = MODELS[2]
    model = _model(name)
    x, classes = _inputs(model, side, n=1)
    a, b = ours(model, [path], "scorecam", x, classes), theirs(model, [path], "scorecam", x,
                                                               classes)
    assert (a - b).abs().max() <= TOLERANCE


def test_score_cam_runs_the_blank_image_once_for_every_dead_channel():
    """A dead channel normalises to an all-zero mask: deconvviz runs the zero image once for
    all of them (pytorch-grad-cam once per channel); the maps are the same."""
    model = small_cnn()
    with torch.no_grad():  # channels 0, 1 and 4 of the last conv: never above zero
        model[2].weight[[0, 1, 4]] = 0.0
        model[2].bias[[0, 1, 4]] = -1.0
    x, classes = _inputs(model, 16, n=2)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        a = ours(model, ["3"], "scorecam", x, classes)
    finally:
        handle.remove()
    # the recording pass (2 images), the blank image once, 3 live channels per image
    assert sum(seen) == 2 + 1 + 2 * 3, seen
    assert (a - theirs(model, ["3"], "scorecam", x, classes)).abs().max() <= TOLERANCE


def test_ablation_cam_zeroes_a_channel_where_pytorch_grad_cam_sets_min_minus_1e7():
    """Before a ReLU the layer's minimum is negative: pytorch-grad-cam then ablates a channel
    to ``min - 1e7`` (the score collapses for every channel alike); the paper sets it to 0.
    Hand-computed: the score with channel k at zero, by running the model's tail."""
    model = small_cnn(relu_last=False)
    x, classes = _inputs(model, 16, n=1)
    with torch.no_grad():
        a = model[:3](x)
        logit = model(x)[0, classes[0]]
        drops = []
        for k in range(a.shape[1]):
            ablated = a.clone()
            ablated[:, k] = 0
            drops.append((logit - model[3:](ablated)[0, classes[0]]) / logit)
        weights = torch.stack(drops)
        expected = scale((weights[None, :, None, None] * a).sum(1).clamp_min(0), (16, 16))[0]
    got = ours(model, ["2"], "ablationcam", x, classes)[0]
    assert (got - scale(expected[None])[0]).abs().max() <= TOLERANCE
    assert (got - theirs(model, ["2"], "ablationcam", x, classes)[0]).abs().max() > 1e-2


def test_ablation_runs_only_the_layers_above_the_layer():
    model = zoo_model("resnet18")
    traced = trace(model)
    tail, frontier = ablation_tail(traced.graph_module,
                                   _node(model, "layer3", torch.zeros(1, 3, 64, 64)))
    ran = {n.target for n in tail.graph.nodes if n.op == "call_module"}
    assert not any(t.startswith(("conv1", "layer1", "layer2", "layer3")) for t in ran)
    assert any(t.startswith("layer4") for t in ran) and "fc" in ran


def test_eigencam_is_oriented_to_the_activations_and_pytorch_grad_cam_is_not():
    """A hand-built map whose principal component is the activations' own pattern: ours is
    that pattern; the SVD may return it negated, which pytorch-grad-cam then rectifies."""
    pattern = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    a = torch.stack([pattern * 2.0, pattern * 1.0, pattern * 0.5])[None]
    got = projection(a)[0]
    centred = (pattern - pattern.mean()).flatten()
    assert torch.corrcoef(torch.stack([got.flatten(), centred]))[0, 1] > 0.999
    assert torch.allclose(projection(-a)[0], -got, atol=1e-6)  # negated activations flip it


def test_the_densenet_grad_cam_reads_norm5_before_the_in_place_relu():
    """torchvision's DenseNet applies ReLU(inplace=True) to features.norm5's output: a hook
    that keeps the output tensor reads the rectified values (pytorch-grad-cam's departure);
    deconvviz copies it first. Hand-computed Grad-CAM from a forward without the in-place op."""
    model = zoo_model("densenet121")
    x, classes = _inputs(model, 64, n=1)
    with torch.enable_grad():
        norm5 = model.features(x.requires_grad_(False))  # ends at norm5, before the ReLU
        a = norm5.detach().clone().requires_grad_(True)
        out = model.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(
            nn.functional.relu(a), 1), 1))
        g, = torch.autograd.grad(out[0, classes[0]], a)
    expected = scale((g.mean((2, 3))[:, :, None, None] * a.detach()).sum(1).clamp_min(0),
                     (64, 64))
    expected = scale(expected)
    got = ours(model, ["features.norm5"], "gradcam", x, classes)
    assert (got - expected).abs().max() <= TOLERANCE
    their = theirs(model, ["features.norm5"], "gradcam", x, classes)
    assert (their - expected).abs().max() > 1e-2  # read after the in-place ReLU


def test_unknown_cam_names_the_choices():
    from deconvviz.errors import ArgumentError

    model = small_cnn()
    with pytest.raises(ArgumentError, match="choose from gradcam, hirescam"):
        ours(model, ["3"], "nocam", torch.zeros(1, 3, 8, 8), [0])


def test_scale_matches_pytorch_grad_cam_scale_cam_image():
    from pytorch_grad_cam.utils.image import scale_cam_image

    maps = torch.rand(2, 5, 7)
    got = scale(maps, (20, 14))
    want = torch.from_numpy(scale_cam_image(maps.numpy(), (14, 20)))
    assert np.abs((got - want).numpy()).max() <= TOLERANCE


def test_every_cam_is_a_method_of_attribute_compare_and_sanity(tmp_path):
    model = small_cnn()
    x, classes = _inputs(model, 16)
    family = [m for m in CAMS if m != "gradcam"]  # gradcam: Captum's, not min-max scaled
    for method in family:
        got = dv.attribute(model, x, method=method, cam_layer="3").map
        assert got.shape == (2, 1, 16, 16), method
        assert torch.allclose(got[:, 0], ours(model, ["3"], method, x, classes), atol=1e-6)
    fused = dv.attribute(model, x, method="layercam", cam_layer="1,3").map[:, 0]
    assert torch.allclose(fused, ours(model, ["1", "3"], "layercam", x, classes), atol=1e-6)
    result = dv.compare(model, x, methods=list(CAMS), cam_layer="3")
    assert set(result.maps) == set(CAMS) and not result.not_applicable
    # Captum's Grad-CAM, unscaled (its max here is 7e-4, so scaling's +1e-7 moves it 1e-4)
    assert torch.allclose(scale(result.maps["gradcam"][:, 0]),
                          ours(model, ["3"], "gradcam", x, classes), atol=1e-3)
    sanity = dv.sanity_check(model, x[:1], methods=["scorecam", "layercam"], cam_layer="3")
    assert sanity.scores["layercam"]["spearman_abs"][0] == pytest.approx(1.0)


def test_compare_all_methods_draws_every_row_of_the_method_table(tmp_path):
    """``--methods all`` is every row of the method table, the CAMs included; each is drawn
    or marked n/a (Eigen-CAM explains a class, not a unit)."""
    from deconvviz.cli.base import method_list

    assert method_list("all", ()) == dv.list_methods()
    assert set(CAMS) <= set(dv.list_methods())
    model = small_cnn()
    x, _ = _inputs(model, 16, n=1)
    # the z^B rule needs the input's bounds, which only a zoo model's preprocessing gives
    methods = [m for m in dv.list_methods() if "box" not in m]
    result = dv.compare(model, x, methods=methods, cam_layer="3",
                        n_steps=2, nt_samples=2, window=8, stride=8)
    assert set(result.maps) | set(result.not_applicable) == set(methods)
    assert set(CAMS) <= set(result.maps)
    unit = dv.compare(model, x, methods=["eigencam", "layercam", "gradient"], layer="3",
                      features=1)  # Eigen-CAM has no target: a class's map only
    assert "eigencam" in unit.not_applicable and {"layercam", "gradient"} <= set(unit.maps)
    assert result.save(tmp_path / "all.png")


class _Upto(nn.Module):
    """The small CNN up to its unit's layer: pytorch-grad-cam's model for a unit target."""

    def __init__(self, model, end):
        super().__init__()
        self.body = model[:end]

    def forward(self, x):
        return self.body(x)


UNIT_CAMS = [m for m in CAMS if m != "eigencam"]


@pytest.mark.parametrize("mode", ["max", "map"])
def test_a_units_cam_equals_pytorch_grad_cam_on_the_model_cut_at_the_unit(mode):
    """A unit's CAM: its activation at its strongest position (``max``) or its map's sum
    (``map``) plays the logit's part. The oracle: pytorch-grad-cam on the model cut after the
    unit's layer, with a target reading that number (after a ReLU its Ablation-CAM is the
    paper's)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 12, 12)
    feature = 2
    with torch.no_grad():
        act = model[:6](x)[:, feature].flatten(1)
    positions = act.argmax(1).tolist()
    if mode == "max":
        targets = [lambda out, p=p: out[feature].flatten()[p] for p in positions]
    else:
        targets = [lambda out: out[feature].sum()] * 2
    before = snapshot(model)
    for method in UNIT_CAMS:
        ours_map = dv.attribute(model, x, method=method, layer="5", features=feature,
                                mode=mode, cam_layer="3").map[:, 0].detach()
        tolerance = TOLERANCE
        if method == "gradcam":  # Captum's LayerGradCam, unscaled (docs/methods.md): the
            # scaling's +1e-7 then weighs 1e-7 / its maximum (about 1e-4 here) on each side
            tolerance += 2 * 1e-7 / float(ours_map.flatten(1).max(1).values.min())
            ours_map = scale(ours_map)
        cam = getattr(pgc, THEIRS[method])(model=_Upto(model, 6),
                                           target_layers=[model[3]])
        with cam:
            theirs_map = torch.from_numpy(cam(input_tensor=x, targets=targets))
        model.zero_grad(set_to_none=True)
        assert (ours_map - theirs_map).abs().max() <= tolerance, (method, mode)
    assert_untouched(model, before)


def test_a_units_cam_refuses_what_has_no_meaning_for_a_unit():
    model = small_cnn()
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(dv.ArgumentError, match="not above it"):
        dv.attribute(model, x, method="scorecam", layer="1", features=0, cam_layer="3")
    with pytest.raises(dv.ArgumentError, match="moves a unit"):
        dv.attribute(model, x, method="gradcam_plus_plus", layer="3", features=0,
                     cam_layer="1", aug_smooth=True)
    with pytest.raises(dv.ArgumentError, match="explains a class, not a unit"):
        dv.attribute(model, x, method="eigencam", layer="3", features=0, cam_layer="1")
