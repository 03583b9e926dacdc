import os
import urllib.error
import warnings

import pytest
import torch
from conftest import ALL_MODELS, ZOO, invoke, zoo_model
from torchvision import models as tvm

import deconvviz as dv
from deconvviz.data.zoo import count_parameters, get_spec

PROMISED = ["zfnet", "alexnet", "vgg16", "vgg19", "googlenet", "resnet18", "resnet34",
            "resnet50", "resnet101", "resnet152", "densenet121", "densenet169", "densenet201"]


def test_list_models_has_the_whole_zoo():
    assert ALL_MODELS == PROMISED  # the README's zoo, in registration order
    assert dv.list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101",
                                         "resnet152"]


@pytest.mark.parametrize("name", ZOO)
def test_every_model_builds_and_runs_at_224(name):
    model = zoo_model(name)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


def test_zfnet_is_the_paper_network():
    model = zoo_model("zfnet")
    assert sum(p.numel() for p in model.parameters()) == 62_357_608
    assert count_parameters("zfnet") == 62_357_608
    shapes = {l.alias: l.shape for l in dv.list_layers(model)}
    assert shapes["conv1"] == (96, 110, 110)
    assert shapes["pool1"] == (96, 55, 55)
    assert shapes["conv2"] == (256, 26, 26)
    assert shapes["pool2"] == (256, 13, 13)
    assert shapes["conv3"] == (384, 13, 13)
    assert shapes["conv4"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)
    assert shapes["fc6"] == (4096,) and shapes["fc7"] == (4096,) and shapes["fc8"] == (1000,)


def test_unknown_model_names_the_choices():
    with pytest.raises(dv.UnknownModelError, match="resnet50") as info:
        dv.load_model("resnet5O", weights=None)
    assert isinstance(info.value, ValueError)
    assert "Valid models" in str(info.value)


def _fake_cache(name, state):
    url = get_spec(name).weights_enum().url
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(folder, exist_ok=True)
    torch.save(state, os.path.join(folder, os.path.basename(url)))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_imagenet_weights_come_from_the_hub_cache_without_network(no_network):
    reference = tvm.resnet18(weights=None)
    _fake_cache("resnet18", reference.state_dict())
    model = dv.load_model("resnet18")
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert dv.model_info(model).trained and dv.model_info(model).weights == "imagenet"


def test_googlenet_imagenet_weights_turn_on_the_input_transform(no_network):
    _fake_cache("googlenet", tvm.googlenet(weights=None, aux_logits=True,
                                           init_weights=False).state_dict())
    model = dv.load_model("googlenet")
    assert model.transform_input and model.aux1 is None and model.aux2 is None
    assert not zoo_model("googlenet").transform_input


def test_no_network_and_no_cache_names_the_ways_out(no_network):
    with pytest.raises(dv.WeightsError) as info:
        dv.load_model("alexnet")
    message = str(info.value)
    assert "\n" not in message
    assert "--weights none" in message and "--weights FILE" in message
    assert "no network in tests" in message


def test_checkpoint_file_loads(tmp_path):
    reference = tvm.resnet18(weights=None)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()},
                "epoch": 3}, path)
    model = dv.load_model("resnet18", weights=str(path))
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert dv.model_info(model).weights == str(path)


def test_mismatched_checkpoint_lists_the_keys(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.save(tvm.alexnet(weights=None).state_dict(), path)
    with pytest.raises(dv.WeightsError) as info:
        dv.load_model("resnet18", weights=str(path))
    message = str(info.value)
    assert "missing keys: conv1.weight" in message
    assert "unexpected keys: features.0.weight" in message


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(dv.WeightsError, match="not found"):
        dv.load_model("resnet18", weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(dv.WeightsError, match="cannot read checkpoint"):
        dv.load_model("resnet18", weights=str(junk))


def test_zfnet_default_weights_warn_that_they_are_untrained():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dv.load_model("zfnet")
    assert any(issubclass(w.category, dv.UntrainedWarning) for w in caught)
    assert not dv.model_info(model).trained


def test_a_download_reports_on_stderr_with_a_progress_bar(monkeypatch, capsys):
    # What a user with a network sees: torch.hub's download, simulated by writing the file
    # where it would go (the tests have no network); stdout stays for the paths written.
    reference = tvm.resnet18(weights=None)
    seen = {}

    def download(url, dst, hash_prefix=None, progress=True):
        seen["progress"] = progress
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = dv.load_model("resnet18")
    out = capsys.readouterr()
    assert out.out == "" and "Downloading: " in out.err
    assert seen["progress"] is True
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_python_and_the_command_line_share_one_default_and_results_say_it(tmp_path):
    # dv.project("resnet18", ...) once used random weights while the CLI used ImageNet's.
    from conftest import CHELSEA

    _fake_cache("resnet18", tvm.resnet18(weights=None).state_dict())
    result = dv.project("resnet18", CHELSEA, layer="layer1", top=2)
    assert result.weights == "imagenet" and "ImageNet weights" in repr(result)
    assert result.title.endswith("- ImageNet weights")
    random = dv.project("resnet18", CHELSEA, layer="layer1", top=2, weights=None)
    assert random.weights == "random" and repr(random).endswith("untrained weights)")
    done = invoke("show", "--model", "resnet18", "--layer", "layer1", "--top", "2", "--out",
                  tmp_path / "x.png", CHELSEA)
    assert done.returncode == 0, done.stderr  # the same cached ImageNet weights


def test_random_weights_are_drawn_with_seed_0_and_leave_the_random_state_alone():
    # The draw itself (conftest reuses its result: this checks that reuse is faithful).
    from deconvviz.data.zoo import _api

    spec = get_spec("resnet18")
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first, second = _api._random.draw(spec), _api._random.draw(spec)
    assert torch.equal(torch.get_rng_state(), before)
    reused = dv.load_model("resnet18", weights=None).state_dict()
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
        assert torch.equal(value, reused[key]), key
    assert any(v.std() > 0 for v in reused.values() if v.is_floating_point())


def test_a_zoo_models_facts_survive_a_deep_copy_and_stay_out_of_its_state_dict():
    import copy

    model = zoo_model("alexnet")
    copied = copy.deepcopy(model)
    assert dv.model_info(copied) == dv.model_info(model) and dv.model_info(model).name == "alexnet"
    assert model.state_dict().keys() == copied.state_dict().keys()
    assert not any("deconvviz" in key for key in model.state_dict())
    # a wrapper has its own module paths: it is not taken for the zoo model
    assert dv.model_info(torch.nn.Sequential(model)) is None
