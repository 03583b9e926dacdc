import pytest
import torch
import torch.nn.functional as F
from captum.attr import NeuronDeconvolution
from conftest import ZOO, assert_untouched, snapshot, zoo_model
from oracle import oracle_project, plain_gradient, rel_error
from torch import nn

import deconvviz as dv
from deconvviz.engine.guard import TrainingModeError

TOLERANCE = 1e-4  # relative max error against the oracle


def hand_net():
    """conv1 (2 channels, 2x2) -> ReLU -> max-pool 2x2/1 (overlapping) -> conv2 1x1 -> ReLU."""
    net = nn.Sequential()
    net.conv1 = nn.Conv2d(1, 2, 2)
    net.relu1 = nn.ReLU()
    net.pool = nn.MaxPool2d(2, stride=1)
    net.conv2 = nn.Conv2d(2, 1, 1)
    net.relu2 = nn.ReLU()
    with torch.no_grad():
        net.conv1.weight.copy_(torch.tensor([[[[1., 0.], [0., 1.]]], [[[0., 1.], [1., 0.]]]]))
        net.conv1.bias.copy_(torch.tensor([-1., 0.]))
        net.conv2.weight.copy_(torch.tensor([-2., 1.]).reshape(1, 2, 1, 1))
        net.conv2.bias.fill_(10.)
    return net.eval()


HAND_X = torch.tensor([[[[0., 1., 0.], [2., 0., 3.], [0., 1., 0.]]]])


def test_hand_worked_example():
    # Forward: channel A = [[-1, 3], [2, -1]] -> relu -> pool picks 3 at (0, 1); channel B =
    # [[3, 0], [0, 4]] -> pool picks 4 at (1, 1); conv2: -2*3 + 4 + 10 = 8.
    # Down: 8 -> conv2^T: A -16, B 8 -> unpool: A -16 at (0,1), B 8 at (1,1) -> rectify: A 0,
    # B 8 -> conv1^T of B's [[0,1],[1,0]] from (1,1): x(1,2) = 8, x(2,1) = 8.
    net = dv.Deconvnet(hand_net())
    p = net.project(HAND_X, "relu2", features=0)
    expected = torch.tensor([[[[0., 0., 0.], [0., 0., 8.], [0., 8., 0.]]]])
    assert torch.equal(p, expected)
    # The plain gradient (seeded 1, so times 8) masks with the forward ReLU instead and keeps
    # channel A's -16.
    gradient = plain_gradient(hand_net(), HAND_X, "relu2", 0)
    assert torch.equal(8 * gradient, torch.tensor([[[[0., -16., 0.], [0., 0., -8.], [0., 8., 0.]]]]))


def test_overlapping_pool_windows_add_up():
    x = torch.tensor([[[[1., 2., 1.], [2., 5., 2.], [1., 2., 1.]]]])
    net = dv.Deconvnet(nn.Sequential(nn.MaxPool2d(2, stride=1)))
    # All four 2x2 windows pick the centre: its projection is the sum of the four values.
    p = net.project(x, "0", features=0, mode="map")
    assert p[0, 0, 1, 1] == 20.0 and p.sum() == 20.0
    # nn.MaxUnpool2d overwrites instead, keeping just one of them.
    out, idx = F.max_pool2d(x, 2, 1, return_indices=True)
    assert F.max_unpool2d(out, idx, 2, 1, output_size=x.shape[-2:]).sum() == 5.0


def _layers(name):
    aliases = list(dv.Deconvnet(zoo_model(name)).aliases)
    return [aliases[0], aliases[len(aliases) // 2], aliases[-1]]


@pytest.mark.agreement
@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("mode", ["max", "map"])
def test_agrees_with_the_oracle_on_every_zoo_model(name, mode):
    model = zoo_model(name)
    net = dv.Deconvnet(model)
    x = torch.randn(2, 3, 64, 64)  # small (as in test_methods), to keep the whole zoo fast
    for layer in _layers(name):
        channels = net.record(x, layer).activations[layer].shape[1]
        features = [0, channels // 2, channels - 1]
        ours = net.project(x, layer, features=features, mode=mode)
        assert ours.shape == (2, 3, 3, 64, 64)
        expected = oracle_project(model, x, net.aliases[layer], features, mode)
        assert rel_error(ours, expected) <= TOLERANCE, (name, layer)
        assert expected.abs().max() > 0 or ours.abs().max() == 0


@pytest.mark.agreement
@pytest.mark.parametrize("name,layer", [("alexnet", "conv5"), ("vgg16", "conv4_3"),
                                        ("resnet18", "layer3")])
def test_agrees_with_captum_up_to_a_positive_scale(name, layer):
    model = zoo_model(name)
    net = dv.Deconvnet(model)
    x = torch.randn(1, 3, 112, 112)
    rec = net.record(x, layer)
    act = rec.activations[layer][0]
    module = model.get_submodule(net.aliases[layer])
    captum = NeuronDeconvolution(model, module)
    for feature in [1, 7]:
        flat = int(act[feature].argmax())
        y, xx = divmod(flat, act.shape[-1])
        theirs = captum.attribute(x, neuron_selector=(feature, y, xx))
        ours = net.project(x, layer, features=feature)
        value = float(act[feature, y, xx])
        assert value > 0
        # deconvviz seeds the activation's value; Captum seeds 1.
        assert rel_error(ours, value * theirs) <= TOLERANCE


def googlenet_with_input_transform():
    from torchvision.models import googlenet

    torch.manual_seed(0)
    return googlenet(weights=None, aux_logits=False, init_weights=True,
                     transform_input=True).eval()


@pytest.mark.agreement
@pytest.mark.parametrize("model_fn,layer", [
    (lambda: zoo_model("googlenet"), "inception3a"),
    (googlenet_with_input_transform, "conv3"),
    (lambda: zoo_model("densenet121"), "features.denseblock2"),
])
def test_functional_relus_are_not_a_plain_gradient(model_fn, layer):
    model = model_fn()
    net = dv.Deconvnet(model)
    x = torch.randn(1, 3, 112, 112)
    path = net.aliases.get(layer, layer)
    ours = net.project(x, layer, features=3)
    assert rel_error(ours, oracle_project(model, x, path, [3])[:, 0]) <= TOLERANCE
    gradient = plain_gradient(model, x, path, 3)
    assert rel_error(gradient, ours) > 0.1


def test_input_transform_scale_applies_and_shift_vanishes():
    model = googlenet_with_input_transform()
    steps = str(dv.Deconvnet(model).reverse_pass("conv1"))
    assert "mul by a constant" in steps and "add of a constant (the shift vanishes)" in steps


@pytest.mark.parametrize("name", ["alexnet", "zfnet"])
@pytest.mark.parametrize("size", [227, 231])
def test_exact_output_size_on_odd_inputs(name, size):
    model = zoo_model(name)
    net = dv.Deconvnet(model)
    x = torch.randn(1, 3, size, size)
    ours = net.project(x, "conv2", features=[0, 9])
    assert ours.shape == (1, 2, 3, size, size)
    assert rel_error(ours, oracle_project(model, x, net.aliases["conv2"], [0, 9])) <= TOLERANCE


def test_transposed_conv_restores_alexnet_conv1_size():
    net = dv.Deconvnet(zoo_model("alexnet"))
    x = torch.randn(1, 3, 224, 224)
    assert net.record(x, "conv1").activations["conv1"].shape[-1] == 55
    assert net.project(x, "conv1", features=0).shape == (1, 3, 224, 224)


class Reused(nn.Module):
    """One ReLU module called twice, an in-place functional ReLU and a method ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(8, 8, 3, dilation=2, groups=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
        x = F.relu(self.conv2(x), inplace=True)
        x = self.conv3(x).relu_()
        return self.relu(x + 1.0)


def test_inplace_and_reused_relus():
    model = Reused().eval()
    net = dv.Deconvnet(model)
    x = torch.randn(2, 3, 37, 37)
    for layer, call in [("relu@0", 0), ("relu@1", 1), ("conv3", 0)]:
        ours = net.project(x, layer, features=[0, 5], mode="map")
        expected = oracle_project(model, x, layer.split("@")[0], [0, 5], "map", call=call)
        assert rel_error(ours, expected) <= TOLERANCE
        assert ours.abs().max() > 0
    assert "max_pool2d" in net.record(x, "relu@1").switches


@pytest.mark.agreement
def test_seed_argument_and_several_seeds_per_image():
    model = zoo_model("zfnet")
    net = dv.Deconvnet(model)
    x = torch.randn(2, 3, 224, 224)
    act = net.record(x, "conv2").activations["conv2"]
    seed = torch.zeros_like(act)
    seed[:, 4] = act[:, 4]
    assert torch.equal(net.project(x, "conv2", signal=seed), net.project(x, "conv2", features=4, mode="map"))
    both = torch.stack([seed, seed * 2], dim=1)
    out = net.project(x, "conv2", signal=both)
    assert out.shape == (2, 2, 3, 224, 224)
    assert torch.allclose(out[:, 1], 2 * out[:, 0])


@pytest.mark.agreement
def test_chunking_does_not_change_the_result():
    model = zoo_model("vgg16")
    x = torch.randn(1, 3, 64, 64)
    # map mode: the full-size pass (the cone has its own test)
    whole = dv.Deconvnet(model).project(x, "conv3_3", features=list(range(12)), mode="map")
    tiny = dv.Deconvnet(model, max_memory=1).project(x, "conv3_3", features=list(range(12)), mode="map")
    assert rel_error(tiny, whole) <= 1e-6


def test_max_mode_keeps_the_first_maximum_on_ties():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.tensor([[[[0., 2.], [2., 1.]]]])
    p = dv.Deconvnet(nn.Sequential(conv)).project(x, "0", features=0)
    assert torch.equal(p, torch.tensor([[[[0., 2.], [0., 0.]]]]))


def test_recording_is_inspectable():
    net = dv.Deconvnet(zoo_model("zfnet"))
    rec = net.record(torch.randn(1, 3, 224, 224), ["conv1", "conv5"])
    assert set(rec.activations) == {"conv1", "conv5"}
    assert list(rec.switches) == ["features.pool1", "features.pool2"]
    assert rec.switches["features.pool1"].shape == (1, 96, 55, 55)
    assert int(rec.switches["features.pool1"].max()) < 110 * 110
    assert "features.pool5" not in rec.switches  # the run stops after conv5


def test_reverse_pass_prints_one_step_per_op():
    text = str(dv.Deconvnet(zoo_model("zfnet")).reverse_pass("conv2"))
    for expected in ["features.relu2", "features.conv2", "features.norm1", "features.pool1",
                     "transposed convolution", "unpool through the switches", "rectify",
                     "local response norm"]:
        assert expected in text


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.head(x * x.argmax(1, keepdim=True))  # an index: no signal passes


def test_an_op_without_a_rule_raises_naming_it():
    net = dv.Deconvnet(Gated().eval())
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(dv.UnsupportedOpError, match=r"argmax at Gated.forward \(test_deconvnet.py:\d+\).*index.*plain gradient"):
        net.project(x, "head", features=0)
    assert net.project(x, "conv", features=0).shape == (1, 3, 16, 16)


def test_batchnorm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    # refused by the guard every model-running call passes through, before any forward
    with pytest.raises(TrainingModeError, match="model.eval"):
        dv.Deconvnet(model).project(torch.randn(2, 3, 8, 8), "2", features=0)
    assert model.training


def test_project_takes_every_form_of_images(tmp_path):
    """One image [3, H, W], a PIL image and a path give what the batch [1, 3, H, W] gives."""
    from PIL import Image

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)).eval()
    net = dv.Deconvnet(model)
    photo = Image.fromarray((torch.rand(20, 20, 3) * 255).to(torch.uint8).numpy())
    photo.save(tmp_path / "photo.png")
    x = dv.load_image(photo, model)[0]
    expected = net.project(x, "2", features=[1, 3])
    assert torch.equal(net.project(x[0], "2", features=[1, 3]), expected)
    assert torch.equal(net.project(photo, "2", features=[1, 3]), expected)
    assert torch.equal(net.project(str(tmp_path / "photo.png"), "2", features=[1, 3]), expected)
    assert torch.equal(net.record([photo], "2").activations["2"],
                       net.record(x, "2").activations["2"])


def test_old_spellings_of_project_warn_and_work():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)).eval()
    net, x = dv.Deconvnet(model), torch.randn(1, 3, 12, 12)
    expected = net.project(x, "2", features=2)
    signal = torch.zeros_like(net.record(x, "2").activations["2"])
    from deconvviz._signatures import reset_warnings

    reset_warnings()
    with pytest.warns(DeprecationWarning, match="features"):
        assert torch.equal(net.project(x, "2", 2), expected)
    with pytest.warns(DeprecationWarning, match="feature="):
        assert torch.equal(net.project(images=x, layer="2", feature=2), expected)
    with pytest.warns(DeprecationWarning, match="seed="):
        assert net.project(x, "2", seed=signal).abs().sum() == 0
    with pytest.warns(DeprecationWarning, match="ReverseStep"):
        assert dv.DeconvStep is dv.ReverseStep


@pytest.mark.parametrize("call,error", [
    (lambda net, x: net.project(x, "conv9", features=0), dv.UnknownLayerError),
    (lambda net, x: net.project(x, "conv3", features=384), dv.ArgumentError),
    (lambda net, x: net.project(x, "conv3", features=[0, -1]), dv.ArgumentError),
    (lambda net, x: net.project(x, "conv3", signal=torch.zeros(1, 5, 13, 13)), dv.ArgumentError),
    (lambda net, x: net.project(x[0, 0], "conv3", features=0), dv.ArgumentError),
    (lambda net, x: net.project(x.long(), "conv3", features=0), dv.ArgumentError),
    (lambda net, x: net.project(x, "conv3", features=0, mode="mean"), dv.ArgumentError),
    (lambda net, x: net.project(x, "conv3"), dv.ArgumentError),
])
def test_bad_arguments_raise_and_leave_the_model_untouched(call, error):
    model = zoo_model("zfnet")
    before = snapshot(model)
    with pytest.raises(error) as info:
        call(dv.Deconvnet(model), torch.randn(1, 3, 224, 224))
    assert isinstance(info.value, ValueError)
    assert_untouched(model, before)


def test_out_of_range_feature_names_the_range():
    with pytest.raises(dv.ArgumentError, match="valid features are 0 to 383"):
        dv.Deconvnet(zoo_model("zfnet")).project(torch.randn(1, 3, 224, 224), "conv3", features=400)


@pytest.mark.parametrize("name", ["zfnet", "googlenet", "resnet18", "densenet121"])
def test_model_untouched_after_success_even_under_no_grad_and_in_train_mode(name):
    model = zoo_model(name)
    before = snapshot(model)
    net = dv.Deconvnet(model)
    layer = list(net.aliases)[2]
    with torch.no_grad():
        out = net.project(torch.randn(1, 3, 96, 96), layer, features=[0, 1])
    assert out.abs().sum() > 0
    assert_untouched(model, before)


def test_user_model_in_training_mode_keeps_its_flag():
    # Dropout in training mode is refused (its random masks would make the picture a draw),
    # by the guard, before any forward (below the dropout too: docs/api.md, "Guards");
    # deconvviz does not switch the model to eval mode behind the user's back.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 3)).train()
    before = snapshot(model)
    for layer in ("3", "1"):
        with pytest.raises(TrainingModeError, match="model.eval()"):
            dv.Deconvnet(model).project(torch.randn(1, 3, 12, 12), layer, features=1)
        assert_untouched(model, before)
    assert dv.Deconvnet(model.eval()).project(torch.randn(1, 3, 12, 12), "1", features=1).shape == (1, 3, 12, 12)
