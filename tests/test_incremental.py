"""Incremental occlusion (engine/passes/incremental.py) against plain forward passes of the occluded
images: every zoo model, a hand-written CNN, EfficientNet-B0 (squeeze-excitation), an op with
no forward-window rule, and the multiply-add count on a hand-computed case.

Tolerance: 1e-5 of the largest probability (and of the largest summed activity), the issue's
bound, and 1e-5 of the largest logit (random weights make the probabilities nearly uniform);
the windowed convolutions round differently from the full ones (measured: below 3e-6).
The summed activity of a pre-ReLU map cancels (ResNet-101's last convolution at random
weights: terms up to 2e4 summing to 2e3), so it is held to 1e-5 of the sum of the terms'
magnitudes, the scale of a sum's rounding: plain passes of the same image in a batch of
one and of four differ by 1.3e-5 of the largest sum there.
Each comparison also checks that the occluder changed the output by far more than the
tolerance, so that agreement means something.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_MODELS, assert_untouched, invoke, snapshot, zoo_model
from torch import nn

import deconvviz as dv
from deconvviz.engine.passes.graph import trace
from deconvviz.engine.passes.incremental import IncrementalForward, IncrementalWarning
from deconvviz.engine.passes.recording import forward_to

TOL = 1e-5
SIZE = 16
# Corners, edges and the middle of a 64-px image: clipping at every border, and several
# alignments to the pools (the square starts at multiples of 8).
POSITIONS = [(0, 0), (48, 48), (24, 8), (8, 40)]


def _occluded(x, ys, xs, size=SIZE):
    batch = x.repeat(len(ys), 1, 1, 1)
    for k, (y, x0) in enumerate(zip(ys, xs)):
        batch[k, :, y:y + size, x0:x0 + size] = 0
    return batch


def _compare(model, x, layer_node=None, batch_size=3, positions=POSITIONS, tol=TOL):
    """Incremental against plain passes: probabilities and one channel's summed activity."""
    traced = trace(model)
    out = traced.output_node.args[0].name
    wanted = [out] + ([layer_node] if layer_node else [])
    plan = IncrementalForward(traced, wanted)
    plan.set_base(x)
    run = forward_to(traced, wanted)
    ys = [p[0] for p in positions]
    xs = [p[1] for p in positions]
    with torch.no_grad():
        base = run(x)
        for chunk in plan.batches(ys, xs, (SIZE, SIZE), batch_size):
            cy, cx = [ys[k] for k in chunk], [xs[k] for k in chunk]
            got = plan.run(x.new_zeros(len(chunk), 3, SIZE, SIZE), cy, cx,
                           channels={layer_node: 0} if layer_node else None)
            want = run(_occluded(x, cy, cx))
            p, q = F.softmax(got[out], 1), F.softmax(want[0], 1)
            assert (p - q).abs().max() <= tol * q.max()
            # Random weights give nearly uniform probabilities: the logits are held too.
            scale = want[0].abs().max()
            assert (got[out] - want[0]).abs().max() <= tol * scale
            changed = [(want[0] - base[0]).abs().max() / scale]
            if layer_node:
                a, b = got[layer_node].sum((1, 2)), want[1][:, 0].sum((1, 2))
                assert (a - b).abs().max() <= tol * want[1][:, 0].abs().sum((1, 2)).max()
                changed.append((b - base[1][:, 0].sum((1, 2))).abs().max() / b.abs().max())
            # The square changed the output (or, where random weights make the logits
            # vanish, as in GoogLeNet's, the feature map) by far more than the tolerance.
            assert max(changed) > 100 * TOL
    return plan


@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_models_equal_plain_passes(name):
    """In float64: the windows' arithmetic is held exactly (1e-10), not float32's rounding,
    which alone moves ResNet-34's probabilities (random weights, logits up to 40) by 4.5e-6
    of the largest between a batch of one and of four plain passes."""
    model = zoo_model(name)
    before = snapshot(model)
    side = 64 if name in ("zfnet", "alexnet") else 48  # the smallest input each accepts
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1)).double()
    last_conv = [op for op in trace(model).ops.values() if op.kind == "conv"][-1].name
    try:
        model.double()  # float -> double -> float is exact: the shared model comes back
        plan = _compare(model, x, layer_node=last_conv, tol=1e-10,
                        positions=[(0, 0), (side - SIZE, side - SIZE), (16, 8)], batch_size=2)
    finally:
        model.float()
    assert plan.macs["minimum"] < plan.macs["full"]  # the windows saved work
    assert_untouched(model, before)


class _Hand(nn.Module):
    """Every kind of op the incremental pass has a rule for, in a 40-line CNN: padded and
    strided convolutions, dilation, groups, ceil-mode and padded max-pools, an average pool,
    BatchNorm, LRN, dropout, an in-place ReLU, a residual addition, a concatenation, SiLU,
    scaling by a constant."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.lrn = nn.LocalResponseNorm(3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.a = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.b = nn.Conv2d(8, 8, 1)
        self.pool2 = nn.MaxPool2d(3, 1, padding=1)
        self.c = nn.Conv2d(16, 12, 3, padding="same")
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(12 * 8 * 8, 5)

    def forward(self, x):
        x = self.pool1(self.lrn(F.relu(self.bn1(self.conv1(x)), inplace=True)))
        y = F.silu(self.a(x)) + self.b(x) * 0.5
        x = torch.cat([self.pool2(y), x], 1)
        x = self.drop(self.avg(torch.relu(self.c(x))))
        return self.fc(torch.flatten(x, 1))


def _hand():
    torch.manual_seed(0)
    model = _Hand().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def test_hand_written_cnn_equals_plain_passes():
    model = _hand()
    before = snapshot(model)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncrementalWarning)  # every op has a rule
        _compare(model, x, layer_node="cat", batch_size=2)
    assert_untouched(model, before)


def test_efficientnet_b0_squeeze_excitation():
    """The SE block's global pool makes every later map change everywhere: from there on the
    passes run in full, and the result still equals the plain passes."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncrementalWarning)  # the sigmoid gate has a rule
        _compare(model, x, batch_size=3)


class _Flip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.top = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv(x)), 4)
        x = torch.relu(self.top(x.flip(-1)))  # no forward-window rule for a flip
        return self.fc(x.flatten(1))


def test_op_without_rule_falls_back_to_full_passes_and_warns_once():
    torch.manual_seed(0)
    model = _Flip().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with pytest.warns(IncrementalWarning) as caught:
        _compare(model, x, batch_size=1)  # four batches
    assert len(caught) == 1 and "flip" in str(caught[0].message)


def test_multiply_adds_counted_on_a_hand_computed_case():
    """One 3x3 convolution (padding 1, 4 -> 2 channels) on an 8x8 map, a 2x2 square in the
    corner: outputs 0..2 of each axis change (9 of 64), 36 multiply-adds each."""
    conv = nn.Sequential(nn.Conv2d(4, 2, 3, padding=1)).eval()
    plan = IncrementalForward(trace(conv), ["_0"])
    x = torch.randn(1, 4, 8, 8)
    plan.set_base(x)
    got = plan.run(torch.zeros(2, 4, 2, 2), [0, 6], [0, 3])["_0"]
    assert plan.macs == {"full": 2 * 64 * 72, "minimum": 9 * 72 + 12 * 72,
                         "computed": 2 * 12 * 72}  # the second square: 3 rows x 4 columns
    want = conv(_occluded(x, [0, 6], [0, 3], size=2))
    assert torch.allclose(got, want, atol=1e-6)


def test_occlusion_api_and_cli_incremental_and_plain(tmp_path, monkeypatch):
    model = _hand()
    before = snapshot(model)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    a = dv.occlusion(model, x, layer="c", size=16, stride=8, batch_size=7)
    b = dv.occlusion(model, x, layer="c", size=16, stride=8, incremental=False)
    assert abs(a.probability - b.probability).max() <= TOL * b.probability.max()
    assert abs(a.activity - b.activity).max() <= TOL * abs(b.activity).max()
    assert (a.label == b.label).all() and a.features == b.features
    assert_untouched(model, before)
    # The command line: the device's choice by default (incremental on a CPU), --plain: full
    # passes.
    import deconvviz.analyses as analyses
    import deconvviz.cli.paper as paper

    seen = []
    monkeypatch.setattr(paper, "load_images_and_model", lambda *args: (model, x[:1]))
    monkeypatch.setattr(analyses, "occlusion", lambda *args, **kw: seen.append(kw) or a)
    for flags in ([], ["--plain"]):
        done = invoke("occlude", "--model", "zfnet", "--size", "16", *flags, "-o",
                      tmp_path / "o.npz", "x.png")
        assert done.returncode == 0, done.stderr
    assert [kw["incremental"] for kw in seen] == [None, False]


def test_cost_without_running_matches_the_run():
    """The dry count (for the benchmark's limit) agrees with what the passes counted."""
    model = _hand()
    traced = trace(model)
    plan = IncrementalForward(traced, [traced.output_node.args[0].name])
    plan.set_base(torch.randn(1, 3, 64, 64))
    ys, xs = [0, 8, 48, 24, 40], [0, 48, 16, 24, 8]
    dry = plan.cost(ys, xs, (SIZE, SIZE), 2)
    for chunk in plan.batches(ys, xs, (SIZE, SIZE), 2):
        plan.run(torch.zeros(len(chunk), 3, SIZE, SIZE), [ys[k] for k in chunk],
                 [xs[k] for k in chunk])
    assert dry == plan.macs
    assert dry["minimum"] <= dry["computed"] < dry["full"]


def test_changed_windows_figure_draws_what_it_is_given():
    from deconvviz.figures import changed_windows_figure

    layers = [("conv1", (8, 8), (0, 3, 2, 6)), ("pool1", (4, 4), (0, 4, 0, 4))]
    fig = changed_windows_figure(layers, title="two layers", columns=3)
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == ["conv1 8x8\n3x4 (19%)", "pool1 4x4\n4x4 (100%)"]
    window = axes[0].patches[1]  # the map, then the window
    assert (window.get_x(), window.get_y(), window.get_width(), window.get_height()) == \
        (2, 0, 4, 3)


def test_the_devices_choice_is_made_once_and_forcing_overrides_it(monkeypatch):
    import importlib

    occ = importlib.import_module("deconvviz.analyses.occlusion")  # the module, not the function
    model = _hand()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    built = []
    real = occ.IncrementalForward
    monkeypatch.setattr(occ, "IncrementalForward", lambda *a, **k: built.append(1) or real(*a, **k))
    a = dv.occlusion(model, x, layer="c", size=16, stride=8)
    assert list(occ._CHOSEN[model].values()) == [True] and built == [1]  # a CPU: incremental
    # as a GPU that found the plain passes faster would have recorded it:
    occ._CHOSEN[model] = {key: False for key in occ._CHOSEN[model]}
    b = dv.occlusion(model, x, layer="c", size=16, stride=8)
    assert built == [1]  # the plain passes, without a dry count or a base pass
    c = dv.occlusion(model, x, layer="c", size=16, stride=8, incremental=True)
    assert built == [1, 1]  # forcing overrides the recorded choice
    for other in (b, c):
        assert abs(a.probability - other.probability).max() <= TOL * a.probability.max()
