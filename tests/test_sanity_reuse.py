"""The sanity check's cascade reuses what a step did not change, and its results are those of
the plain cascade; its SSIM is torchmetrics' in float64; the engine's Rerecorder equals a plain
recording, runs only what changed, and stops reusing where an in-place op would make a copy
wrong."""
import copy

import pytest
import torch
from conftest import assert_untouched, snapshot, zoo_model
from torch import nn

import deconvviz as dv
from deconvviz.analyses.sanity import DEFAULT_METHODS, ssim
from deconvviz.engine.passes.graph import trace
from deconvviz.engine.passes.recording import record_nodes
from deconvviz.engine.passes.rerecord import Rerecorder

TOL = 1e-6  # of each map's largest value, and of each score


def _largest_difference(a, b):
    """Of two [steps, N, ...] stacks of maps, relative to each map's largest value."""
    scale = a.abs().flatten(2).amax(2).clamp_min(1e-30)
    return float(((a - b).abs().flatten(2).amax(2) / scale).max())


def _assert_same_cascade(model, x, methods, layers=None):
    before = snapshot(model)
    plain = dv.sanity_check(model, x, methods=methods, layers=layers, reuse=False)
    reused = dv.sanity_check(model, x, methods=methods, layers=layers)
    assert_untouched(model, before)
    assert reused.steps == plain.steps
    for method in methods:
        maps = plain.maps[method]
        assert _largest_difference(maps, reused.maps[method]) <= TOL, method
        for metric, values in plain.scores[method].items():
            assert reused.scores[method][metric] == pytest.approx(values, abs=TOL)
        # the check can fail: each step's map moves by far more than the tolerance
        moved = [_largest_difference(maps[k:k + 1], maps[k + 1:k + 2])
                 for k in range(len(maps) - 1)]
        assert min(moved) > 1000 * TOL, (method, moved)
        assert reused.scores[method]["ssim"][0] == 1.0  # identical maps: exactly 1
    return reused


@pytest.mark.agreement
def test_the_reused_cascade_equals_the_plain_one_for_every_default_method():
    # AlexNet: a chain with in-place ReLUs; Grad-CAM's layer (a ReLU module) is rerun from
    # the convolution under it; every LRP composite keeps the terms of the layers below.
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    layers = ["features.3", "features.8", "features.10", "classifier.4", "classifier.6"]
    _assert_same_cascade(zoo_model("alexnet"), x, [*DEFAULT_METHODS, "guided_gradcam"],
                         layers)


@pytest.mark.agreement
def test_the_reused_cascade_equals_the_plain_one_with_batchnorms_and_skips():
    # ResNet-18: BatchNorms folded into the convolution below them by LRP (a re-initialised
    # BatchNorm must not leave its convolution's cached terms behind), in-place additions of
    # a skip connection, a downsampling branch, Grad-CAM on a block (run as attribute runs it).
    torch.manual_seed(0)
    model = copy.deepcopy(zoo_model("resnet18"))  # BatchNorms away from their defaults
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for value in (module.weight, module.bias, module.running_mean):
                value.data.normal_(0, 0.5)
            module.running_var.data.uniform_(0.5, 2)
    x = torch.randn(1, 3, 64, 64)
    layers = ["layer4.0.conv2", "layer4.0.bn2", "layer4.0.downsample.0",
              "layer4.0.downsample.1", "layer4.1.conv2", "layer4.1.bn2", "fc"]
    _assert_same_cascade(model, x,
                         ["guided", "lrp_epsilon_gamma_box", "gradcam"], layers)


def _recordings_agree(a, b):
    assert set(a.inputs) == set(b.inputs) and set(a.switches) == set(b.switches)
    assert torch.equal(a.activations[""], b.activations[""])
    assert all(torch.equal(a.inputs[n], b.inputs[n]) for n in b.inputs)
    assert all(torch.equal(a.switches[n], b.switches[n]) for n in b.switches)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3)).eval()


@pytest.mark.agreement
def test_the_rerecorder_runs_only_what_changed_and_equals_a_plain_recording():
    model = _small_net()
    traced = trace(model)
    out = traced.output_node.args[0].name
    inputs = [op.name for op in traced.ops.values() if op.kind in ("relu", "conv")]
    x = torch.randn(2, 3, 16, 16)
    again = Rerecorder(traced, x, {out: ""}, switches=True, inputs=inputs)
    again.record()
    calls = [n.name for n in traced.graph_module.graph.nodes if n.op == "call_module"]
    assert again.ran == calls
    for path, ran in (("6", ["_6"]), ("3", ["_3", "_4", "_5", "_6"]), ("0", None)):
        model.get_submodule(path).reset_parameters()
        rec = again.record([path])
        if ran is not None:
            assert again.ran == ran
        _recordings_agree(rec, record_nodes(traced, x, {out: ""}, switches=True,
                                            inputs=inputs))
    assert again.reuses


class _ReadAfterInPlace(nn.Module):
    """``y`` is read again after ``relu_`` changed it in place: a copy taken when ``y`` was
    computed would be wrong for that reader."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x):
        y = self.conv1(x)
        z = torch.relu_(y)
        return self.fc((self.conv2(y) + z[..., 1:-1, 1:-1]).flatten(1))


def test_the_rerecorder_stops_reusing_where_an_in_place_op_changed_a_value_read_later():
    torch.manual_seed(0)
    model = _ReadAfterInPlace().eval()
    traced = trace(model)
    out = traced.output_node.args[0].name
    x = torch.randn(1, 3, 14, 14)
    again = Rerecorder(traced, x, {out: ""}, switches=False)
    again.record()
    assert not again.reuses
    model.conv2.reset_parameters()
    rec = again.record(["conv2"])
    assert again.ran == [n.name for n in traced.graph_module.graph.nodes
                         if n.op.startswith("call_")]  # the whole graph ran again
    assert torch.equal(rec.activations[""], record_nodes(traced, x, {out: ""}).activations[""])


def test_ssim_is_torchmetrics_in_float64_and_identical_maps_are_exactly_1():
    from torchmetrics.functional.image import structural_similarity_index_measure

    torch.manual_seed(0)
    a = torch.randn(3, 1, 48, 40, dtype=torch.float64).abs() ** 3  # heavy-tailed, as maps are
    b = torch.randn(3, 1, 48, 40, dtype=torch.float64).abs() ** 3
    a, b = a / a.amax((2, 3), keepdim=True), b / b.amax((2, 3), keepdim=True)
    theirs = structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
    mine = ssim(b, a)
    assert torch.allclose(mine, theirs, rtol=0, atol=1e-12)
    # 1e-12 is tight: moving one pixel by 1e-6 moves SSIM by more than that
    nudged = b.clone()
    nudged[0, 0, 20, 20] += 1e-6
    assert abs(float(ssim(nudged, a)[0] - theirs[0])) > 1e-12
    assert ssim(a, a.clone()).tolist() == [1.0, 1.0, 1.0]
    assert ssim(nudged, b).tolist()[1:] == [1.0, 1.0] and float(ssim(nudged, b)[0]) < 1.0
