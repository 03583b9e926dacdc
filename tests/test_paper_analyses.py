"""Occlusion (Fig. 7), invariance (Fig. 5) and correspondence (Table 1), each checked against
a brute-force computation written here (occlude, transform or mask one case by hand and run
the model), to 1e-4 relative."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from conftest import (
    CHELSEA,
    EXAMPLES,
    FAMILIES,
    assert_untouched,
    captured_outputs,
    invoke,
    snapshot,
    zoo_model,
)
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import deconvviz as dv
from deconvviz.analyses.correspondence import hamming_delta

COFFEE = os.path.join(EXAMPLES, "coffee.png")


def close(a, b, rtol=1e-4):
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def run_with_hook(model, module, x):
    with captured_outputs(module, detach=True) as captured, torch.no_grad():
        out = model(x)
    return captured[0], out


@pytest.mark.agreement
def test_occlusion_against_occluding_by_hand():
    model = zoo_model("alexnet")
    before = snapshot(model)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96) * 2
    result = dv.occlusion(model, x, size=32, stride=16)
    assert result.layer == "conv5" and result.probability.shape == (1, 5, 5)
    module = model.get_submodule(dv.Deconvnet(model).aliases["conv5"])
    f, c = result.features[0], result.targets[0]
    act, out = run_with_hook(model, module, x)
    assert f == int(act[0].reshape(act.shape[1], -1).amax(dim=1).argmax())
    assert c == int(out.argmax())
    for i, j in [(0, 0), (2, 3), (4, 4), (1, 0)]:
        occluded = x.clone()
        occluded[..., i * 16:i * 16 + 32, j * 16:j * 16 + 32] = 0
        act, out = run_with_hook(model, module, occluded)
        p = F.softmax(out, dim=1)[0]
        assert close(result.activity[0, i, j], float(act[0, f].sum()))
        assert close(result.probability[0, i, j], float(p[c]))
        assert result.label[0, i, j] == int(p.argmax())
    assert_untouched(model, before)


@pytest.mark.agreement
def test_occlusion_agrees_with_captum_when_the_squares_tile():
    model = zoo_model("vgg16")
    torch.manual_seed(1)
    x = torch.randn(1, 3, 96, 96) * 2
    result = dv.occlusion(model, x, size=32, stride=32, target=7)
    captum = Occlusion(lambda inp: F.softmax(model(inp), dim=1)[:, 7]).attribute(
        x, sliding_window_shapes=(3, 32, 32), strides=(3, 32, 32), baselines=0.0)
    drop = result.unoccluded_probability[0] - result.probability[0]  # [3, 3]
    assert np.abs(drop).max() > 0
    for i in range(3):
        for j in range(3):
            square = captum[0, :, i * 32:(i + 1) * 32, j * 32:(j + 1) * 32]
            assert torch.allclose(square, torch.full_like(square, float(drop[i, j])),
                                  rtol=1e-4, atol=1e-9)


@pytest.mark.agreement
def test_invariance_against_transforming_by_hand():
    model = zoo_model("zfnet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    result = dv.invariance(model, x, transform="rotate", values=[0, 30])
    assert list(result.distance) == ["conv1", "fc7"]
    assert (result.distance["conv1"][:, 0] == 0).all() and (result.distance["fc7"][:, 0] == 0).all()
    net = dv.Deconvnet(model)
    module = model.get_submodule(net.aliases["fc7"])
    a0, out0 = run_with_hook(model, module, x)
    assert np.allclose(result.probability[:, 0], F.softmax(out0, 1)[[0, 1], result.targets])
    rotated = TF.affine(x, angle=30.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                        interpolation=InterpolationMode.BILINEAR, fill=0.0)
    a1, out1 = run_with_hook(model, module, rotated)
    for n in range(2):
        assert close(result.distance["fc7"][n, 1], float((a1[n] - a0[n]).norm()))
        assert close(result.probability[n, 1],
                     float(F.softmax(out1, 1)[n, result.targets[n]]))


@pytest.mark.agreement
def test_correspondence_against_masking_by_hand():
    model = zoo_model("alexnet")
    torch.manual_seed(0)
    x = torch.randn(3, 3, 224, 224)
    parts = {"eye": [[10, 20, 40, 30], [30, 40, 40, 30], [100, 50, 40, 30]]}
    result = dv.correspondence(model, x, parts=parts, layers=["conv2", "fc7"], random=2)
    module = model.get_submodule(dv.Deconvnet(model).aliases["conv2"])
    a0, _ = run_with_hook(model, module, x)
    masked = x.clone()
    for i, (bx, by, w, h) in enumerate(parts["eye"]):
        masked[i, :, by:by + h, bx:bx + w] = 0
    a1, _ = run_with_hook(model, module, masked)
    signs = [torch.sign(a0[i] - a1[i]).flatten() for i in range(3)]
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    by_hand = sum(float((signs[i] != signs[j]).float().mean()) for i, j in pairs) / len(pairs)
    assert close(result.delta["eye"]["conv2"], by_hand)
    assert hamming_delta(torch.tensor([[1.0, -1.0], [1.0, 1.0]])) == 0.5
    mean, std = result.random["eye"]["conv2"]
    assert 0 <= mean <= 1 and std >= 0
    table = result.table()
    assert table.splitlines()[0].startswith("| part | Δ conv2 | Δ fc7 |")
    assert "±" in table and result.table("latex").startswith("\\begin{tabular}")


@pytest.mark.parametrize("name", FAMILIES)
def test_figures_for_every_zoo_family(name, tmp_path):
    model = zoo_model(name)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    occluded = dv.occlusion(model, x[:1], size=32, stride=32)
    moved = dv.invariance(model, x, transform="scale", values=[1.0, 1.4])
    parts = dv.correspondence(model, x, parts={"box": [[0, 0, 16, 16], [8, 8, 16, 16]]}, random=1)
    for result, stem in [(occluded, "o"), (moved, "i"), (parts, "c")]:
        for ext in (".png", ".pdf") if name == FAMILIES[0] else (".png",):  # PDF: any model
            path = result.save(tmp_path / f"{stem}{ext}", dpi=40)
            assert os.path.getsize(path) > 1000


@pytest.mark.parametrize("parts,message", [
    ({"eye": [[200, 10, 40, 40], [10, 10, 40, 40]]}, "is not inside the 224x224 crop"),
    ({"eye": [[10, 10, 40, 40]]}, "part 'eye' has 1 box(es) for 2 images"),
])
def test_bad_parts(tmp_path, parts, message):
    (tmp_path / "parts.json").write_text(json.dumps(parts))
    proc = invoke("correspondence", "--model", "alexnet", "--weights", "none", "--parts",
               "parts.json", "--out", "t.md", CHELSEA, COFFEE, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.md").exists()


@pytest.mark.parametrize("args,message", [
    (["invariance", "--transform", "spin"], "unknown transform 'spin'"),
    (["occlude", "--size", "300"], "the occluder (300 px) is larger than the image"),
])
def test_bad_analysis_arguments(tmp_path, args, message):
    command, *options = args
    proc = invoke(command, "--model", "alexnet", "--weights", "none", *options, "--out", "f.png",
               CHELSEA, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert os.listdir(tmp_path) == []


def test_the_three_commands(tmp_path):
    (tmp_path / "parts.json").write_text(json.dumps({"eye": [[60, 60, 40, 40]] * 2}))
    for args in [["occlude", "--size", "112", "--stride", "56", "--out", "f7.pdf", CHELSEA],
                 ["invariance", "--transform", "translate", "--out", "f5.png", "--csv",
                  "f5.csv", CHELSEA],
                 ["correspondence", "--parts", "parts.json", "--random", "2", "--out",
                  "t1.csv", CHELSEA, COFFEE]]:
        proc = invoke(args[0], "--model", "alexnet", "--weights", "none", *args[1:],
                   cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["f5.csv", "f5.png", "f7.pdf", "parts.json",
                                            "t1.csv"]
    rows = open(tmp_path / "f5.csv").read().splitlines()
    assert len(rows) == 1 + 13  # header, 13 shifts
    assert rows[1].split(",")[2] == "chelsea.png"  # the image's name, not an index
    assert open(tmp_path / "t1.csv").read().splitlines()[-1] == "# alexnet, untrained weights"


def test_the_boxes_figure_is_drawn_without_running_the_model(tmp_path, monkeypatch):
    import importlib

    import deconvviz.analyses

    module = importlib.import_module("deconvviz.analyses.correspondence")
    monkeypatch.setattr(deconvviz.analyses, "correspondence",
                        lambda *a, **k: pytest.fail("ran the analysis"))
    monkeypatch.setattr(dv, "load_model", lambda *a, **k: pytest.fail("built the model"))
    (tmp_path / "parts.json").write_text(json.dumps({"eye": [[60, 60, 40, 40]] * 2}))
    proc = invoke("correspondence", "--model", "alexnet", "--parts", "parts.json", "--out",
                  "boxes.png", "--dpi", "50", CHELSEA, COFFEE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "boxes.png").stat().st_size > 1000
    fig = module.parts_figure("alexnet", [CHELSEA, COFFEE], {"eye": [[60, 60, 40, 40]] * 2})
    assert "no model run" in fig.texts[0].get_text()
    assert len(fig.axes[0].patches) == 1  # the box


def test_every_analysis_says_which_weights_drew_it():
    model = zoo_model("alexnet")  # random weights
    x = torch.randn(2, 3, 64, 64)
    results = [dv.occlusion(model, x[:1], size=32, stride=32),
               dv.invariance(model, x, transform="scale", values=[1.0, 1.4], progress=False),
               dv.correspondence(model, x, parts={"box": [[0, 0, 16, 16]] * 2}, random=1,
                                 progress=False),
               dv.sanity_check(model, x[:1], methods=["gradient"])]
    for result in results:
        assert result.figure().texts[0].get_text().endswith("- untrained weights"), result
    assert results[2].table().splitlines()[-1] == "*alexnet, untrained weights*"
    assert results[2].table("latex").splitlines()[-1] == "% alexnet, untrained weights"


def test_the_invariance_figure_names_each_image_and_its_class():
    model = zoo_model("alexnet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    result = dv.invariance(model, x, transform="rotate", values=[0, 20, 40], labels=["a.jpg", "b.png"],
                           progress=False)
    assert len(result.examples) == 3 and len(result.examples[0]) == 2  # every image's
    fig = result.figure()
    probability = next(ax for ax in fig.axes if ax.get_title().startswith("p("))
    assert probability.get_title() == "p(original top-1 class)"
    legend = [t.get_text() for t in probability.get_legend().get_texts()]
    names = [result.class_name(c) for c in result.targets]
    assert legend == [f"a.jpg ({names[0]})", f"b.png ({names[1]})"]
    thumbnails = [ax for ax in fig.axes if ax.images]
    assert len(thumbnails) == 2 * 3  # both images, three values each
    chosen = dv.invariance(model, x, transform="rotate", values=[0, 20], target=3, progress=False)
    assert chosen.figure().axes[-1].get_title() == "p(target class)"
    with pytest.raises(dv.ArgumentError, match="3 image labels for 2 images"):
        dv.invariance(model, x, transform="rotate", labels=["a", "b", "c"])


@pytest.mark.agreement
def test_invariance_in_batches_equals_one_value_at_a_time():
    # Transformed images are stacked into batches; the numbers are those of one value at a
    # time to float precision (another batch size may round differently), and the identity
    # is exactly 0 away.
    model = zoo_model("zfnet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 112, 112)
    values = [0, 10, 20, 30]
    batched = dv.invariance(model, x, transform="rotate", values=values, batch_size=8, progress=False)
    single = dv.invariance(model, x, transform="rotate", values=values, batch_size=1, progress=False)
    for layer in batched.distance:
        assert (batched.distance[layer][:, 0] == 0).all()
        assert np.allclose(batched.distance[layer], single.distance[layer], rtol=1e-4,
                           atol=1e-5 * single.distance[layer].max())
    assert np.allclose(batched.probability, single.probability, rtol=1e-4, atol=1e-7)
