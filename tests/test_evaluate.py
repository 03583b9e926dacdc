"""dv.evaluate, the driver of the evaluation: each method's maps made once and shared by every
metric, the scores of the right maps and classes, the table's arithmetic by hand, methods that
cannot run reported, and bad input refused before anything runs (the model left untouched).

The metrics here are toys registered for the test (the real ones are tested against their
peers in tests/test_metrics_*.py): they read what the driver gives them."""
import math

import pytest
import torch
from conftest import assert_untouched, snapshot
from torch import nn

import deconvviz as dv
from deconvviz import metric_table
from deconvviz.analyses.evaluation import Inputs, Score, base, metric
from deconvviz.analyses.evaluation import evaluate as driver
from deconvviz.analyses.evaluation.result import EvaluationResult, summarise

SEEN = []  # (metric, method's maps object) per call


@pytest.fixture(scope="module", autouse=True)
def toy_metrics():
    entries = [metric_table.Metric("toy_sum", "toy sum", "complexity", True, (),
                                   params={"scale": 1.0}),
               metric_table.Metric("toy_inside", "toy inside", "localisation", True,
                                   ("boxes",)),
               metric_table.Metric("toy_explain", "toy explain", "robustness", False,
                                   ("explain",))]
    for entry in entries:
        metric_table.register(entry)

    @metric("toy_sum")
    def toy_sum(inputs, scale):
        SEEN.append(("toy_sum", inputs.maps))
        total = inputs.maps.double().flatten(1).sum(1) * scale
        return Score(total, curve=torch.stack([total, 2 * total], 1),
                     curve_x=torch.tensor([0.0, 1.0]), forward_passes=3)

    @metric("toy_inside")
    def toy_inside(inputs):  # the share of the map's channel sum inside the object
        plane = inputs.maps.double().sum(1)
        return Score((plane * inputs.masks).flatten(1).sum(1) / plane.flatten(1).sum(1))

    @metric("toy_explain")
    def toy_explain(inputs):
        SEEN.append(("toy_explain", inputs.maps))
        again = inputs.explain(inputs.model, inputs.images, inputs.targets)
        return Score((again - inputs.maps).abs().flatten(1).amax(1).double())

    yield
    for entry in entries:
        metric_table.unregister(entry.name)
        base._REGISTRY.pop(entry.name)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 5)).eval()


X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_each_method_maps_once_shared_by_every_metric(monkeypatch):
    calls = []
    real = driver.attribute_map
    monkeypatch.setattr(driver, "attribute_map",
                        lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    SEEN.clear()
    model = small_model()
    before = snapshot(model)
    result = dv.evaluate(model, X, methods=["gradient", "guided"],
                         metrics=["toy_sum", "toy_explain"], progress=False)
    assert_untouched(model, before)  # no hook, mode or gradient left behind
    # one map per method, then one recomputation by toy_explain's explain
    assert calls == ["gradient", "gradient", "guided", "guided"]
    assert SEEN[0][1] is SEEN[1][1] and SEEN[2][1] is SEEN[3][1]  # the same tensor
    for method in ("gradient", "guided"):  # explain gives the same maps, exactly
        assert result.scores[method]["toy_explain"].abs().max() == 0


def test_the_scores_are_of_each_images_top_class_maps():
    model = small_model()
    result = dv.evaluate(model, X, methods="gradient", metrics="toy_sum", progress=False)
    expected = dv.attribute(model, X, method="gradient").map.double().sum((1, 2, 3))
    got = result.scores["gradient"]["toy_sum"]
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(got, expected * (1 + 1e-5), rtol=1e-6, atol=0)  # outside
    fixed = dv.evaluate(model, X, methods="gradient", metrics="toy_sum", target=2,
                        params={"toy_sum": {"scale": 2.0}}, batch_size=2, progress=False)
    expected = dv.attribute(model, X, method="gradient", target=2).map.double().sum((1, 2, 3))
    assert torch.allclose(fixed.scores["gradient"]["toy_sum"], 2 * expected, rtol=1e-6,
                          atol=0)
    assert fixed.target.classes == [2, 2, 2]
    curve, x = fixed.curves["gradient"]["toy_sum"]
    assert curve.shape == (3, 2) and x.tolist() == [0.0, 1.0]
    assert fixed.forward_passes["gradient"]["toy_sum"] == 3


def test_the_table_by_hand(tmp_path):
    scores = {"a": {"m": torch.tensor([1.0, 2.0, 4.0])},
              "b": {"m": torch.tensor([0.5, float("nan"), 0.5])}}
    result = EvaluationResult(["a", "b", "c"], ["m"], scores, {}, {}, {}, {"c": "no convs"},
                              ["i0", "i1", "i2"], None, {}, [], "net", "random",
                              metric_titles={"m": "M_1"}, higher_is_better={"m": False})
    # mean 7/3; sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3; sem sqrt(7/3 / 3)
    mean, sem, n = result.summary("a", "m")
    assert (mean, n) == (pytest.approx(7 / 3, rel=1e-12), 3)
    assert sem == pytest.approx(math.sqrt(7 / 9), rel=1e-12)
    assert summarise(torch.tensor([0.5, float("nan"), 0.5])) == (0.5, 0.0, 2)
    assert math.isnan(summarise(torch.tensor([1.0]))[1])
    table = result.to_dict()
    assert table["method"] == ["a", "b", "c"] and table["n"] == [3, 2, 0]
    assert table["note"] == ["", "", "no convs"]
    assert all(math.isnan(t) for t in table["seconds"] + table["maps_seconds"])  # none given
    md = result.to_markdown()
    assert "| a | 2.333 ± 0.88 |" in md and "| b | **0.5 ± 0** |" in md  # lower wins
    assert "| c | n/a |" in md and "- c: n/a (no convs)" in md and "M_1 ↓" in md
    assert "net (untrained weights), 3 images; mean ± standard error over the images." in md
    tex = result.to_latex()
    assert r"M\_1 $\downarrow$" in tex and r"\textbf{0.5 $\pm$ 0}" in tex
    for ext in (".csv", ".md", ".tex", ".npz"):
        path = result.save(tmp_path / f"t{ext}")
        assert open(path, "rb").read()
    assert open(tmp_path / "t.md").read() == md


def test_a_method_that_cannot_run_is_reported_and_the_figure_draws_the_rest():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 5)).eval()
    seen = []
    result = dv.evaluate(mlp, X, methods=["gradient", "gradcam"], metrics="toy_sum",
                         progress=lambda done, total, label: seen.append((done, total)))
    assert list(result.not_applicable) == ["gradcam"]
    assert "convolutional" in result.not_applicable["gradcam"]
    assert result.to_dict()["note"][1] == result.not_applicable["gradcam"]
    assert seen[-1] == (4, 4)  # 2 methods x (maps + 1 metric)
    fig = result.figure(count=2)
    assert len(fig.axes) == 1 + 2 * 2  # the metric's panel; 2 images x (photo, gradient)


@pytest.mark.parametrize("kwargs,message", [
    ({"metrics": "toy_summ"}, "unknown metric 'toy_summ'. Did you mean 'toy_sum'"),
    ({"methods": "gradients"}, "unknown method"),
    ({"metrics": "toy_inside"}, "toy_inside need(s) the objects' boxes"),
    ({"metrics": "toy_inside", "boxes": [[(0, 0, 4, 4)], [(0, 0, 17, 4)], [(1, 1, 2, 2)]]},
     "image 1: box 0 (unnamed: 0, 0, 17, 4) lies outside the image (16x16 pixels)"),
    ({"metrics": "toy_inside", "boxes": [[(0, 0, 4, 4)], [], [(1, 1, 2, 2)]]},
     "image 1 has no box"),
    ({"metrics": "toy_inside", "boxes": [[(0, 0, 4, 4)]]}, "boxes holds 1 image"),
    ({"params": {"toy_sum": {"scales": 2}}}, "metric 'toy_sum' takes no parameter scales; its parameters: scale"),
    ({"params": {"toy_explain": {}}}, "params for 'toy_explain', which is not evaluated"),
])
def test_bad_input_is_refused_and_the_model_left_untouched(kwargs, message):
    model = small_model()
    before = snapshot(model)
    kwargs = {"metrics": "toy_sum", "methods": "gradient", **kwargs}
    with pytest.raises(dv.ArgumentError, match=f"^{message.replace('(', '.').replace(')', '.')}"):
        dv.evaluate(model, X, progress=False, **kwargs)
    assert_untouched(model, before)


def test_boxes_become_masks_of_the_model_pixels():
    boxes = [[(0, 0, 8, 16)], [(0, 0, 16, 16, "all")], [(8, 8, 16, 16), (0, 0, 8, 8)]]
    result = dv.evaluate(small_model(), X, methods=["gradient"], metrics="toy_inside",
                         boxes=boxes, progress=False)
    plane = dv.attribute(small_model(), X, method="gradient").map.double().sum(1)
    masks = torch.zeros(3, 16, 16)
    masks[0, :, :8] = 1
    masks[1] = 1
    masks[2, 8:, 8:] = masks[2, :8, :8] = 1
    expected = (plane * masks).flatten(1).sum(1) / plane.flatten(1).sum(1)
    assert torch.allclose(result.scores["gradient"]["toy_inside"], expected, rtol=1e-6)
    assert result.scores["gradient"]["toy_inside"][1] == pytest.approx(1.0)


# --- the command line -------------------------------------------------------------------------

def _photo_and_boxes(tmp_path, objects):
    """chelsea.png copied as cat.png, and a folder holding its VOC annotation."""
    import shutil

    from conftest import CHELSEA
    from PIL import Image

    shutil.copy(CHELSEA, tmp_path / "cat.png")
    width, height = Image.open(CHELSEA).size
    rows = "".join(f"<object><name>cat</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for a, b, c, d in objects(width, height))
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "cat.xml").write_text(
        f"<annotation><filename>cat.png</filename><size><width>{width}</width><height>"
        f"{height}</height></size>{rows}</annotation>")
    return str(tmp_path / "cat.png"), str(tmp_path / "ann")


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """``deconvviz evaluate`` of a 5-class ResNet-18 checkpoint that sees 32-pixel crops
    (``--weights FILE``, as for the published tables' weights)."""
    import torchvision

    from deconvviz.data.zoo import Preprocessing, checkpoint_payload

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(checkpoint_payload(net, "resnet18", classes=list("abcde"),
                                  preprocessing=Preprocessing(resize_size=40, crop_size=32)),
               path)
    return ["evaluate", "--model", "resnet18", "--weights", str(path)]


@pytest.mark.parametrize("args,objects,message", [
    (["--metrics", "toy_summ"], None, "unknown metric 'toy_summ'"),
    (["--methods", "gradiant"], None, "unknown method 'gradiant'"),
    (["--metrics", "localisation"], None, "need(s) the objects' boxes: give --boxes"),
    (["--metrics", "toy_inside"], lambda w, h: [], "cat.png has no box"),
    (["--metrics", "toy_inside"], lambda w, h: [(1, 1, w + 1, 10)], "lies outside the image"),
    (["--param", "toy_sum"], None, "--param is METRIC.NAME=VALUE"),
    (["--metrics", "toy_sum", "--param", "deletion.steps=4"], None,
     "'deletion' is not evaluated"),
    (["--metrics", "deletion", "--param", "deletion.step=4"], None,
     "takes no parameter 'step'; its parameters: steps, substrate"),
    (["--metrics", "deletion", "--param", "deletion.steps=abc"], None,
     "deletion's steps is a whole number of at least 1, got 'abc'"),
    (["--metrics", "deletion", "--param", "delation.steps=4"], None,
     "unknown metric 'delation'. Did you mean 'deletion'"),
    (["--metrics", "deletion", "--param", "deletion.steps=4", "--param", "deletion.steps=5"],
     None, "deletion.steps is given twice"),
])
def test_the_command_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, args, objects,
                                                                      message, r18):
    from conftest import invoke
    from test_cli_inputs import one_error_line

    image, folder = _photo_and_boxes(tmp_path, objects or (lambda w, h: [(1, 1, 9, 9)]))
    boxes = ["--boxes", folder] if objects else []
    proc = invoke(*r18, "--methods", "gradient", *args, *boxes, "--out", tmp_path / "out",
                  "--csv", tmp_path / "t.csv", image)
    one_error_line(proc, message)
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.csv").exists()


def test_the_command_writes_the_table_and_the_figure(tmp_path, r18):
    from conftest import invoke

    image, folder = _photo_and_boxes(tmp_path, lambda w, h: [(1, 1, w, h)])
    proc = invoke(*r18, "--methods", "gradient,gradcam", "--metrics", "toy_sum,toy_inside",
                  "--boxes", folder, "--out", tmp_path / "out", "--tex", tmp_path / "t.tex", "--dpi", 40,
                  image)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["evaluation.csv", "evaluation.md", "evaluation.png", "evaluation.tex",
                     "per_image.csv"]
    assert len(proc.stdout.splitlines()) == 6  # the paths written
    assert "6/6" in proc.stderr  # the bar and its total: 2 methods x (maps + 2 metrics)
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert "| gradient |" in md and "| Grad-CAM |" in md
    # the whole photo is the object: every map's sum lies inside it
    assert "| gradient | -" in md and md.count("| 1 |") == 2  # a tie: neither in bold
    printed = invoke(*r18, "--methods", "gradient", "--metrics", "toy_sum", image)
    assert printed.stdout.startswith("| method | toy sum ↑ |")
    assert "Parameters other" not in printed.stdout
    assert "r18.pt), 1 image (no standard error)." in printed.stdout  # the weights' file


def test_a_metrics_parameter_from_the_command_runs_and_is_stated(tmp_path, r18):
    from conftest import invoke

    image, _ = _photo_and_boxes(tmp_path, lambda w, h: [(1, 1, w, h)])
    proc = invoke(*r18, "--methods", "gradient", "--metrics", "deletion,road_morf",
                  "--param", "deletion.steps=4", "--param", "road_morf.percentages=(50,)",
                  image)
    assert proc.returncode == 0, proc.stderr
    # the bar announces the passes: 1 image x (5 deletion steps + 1 ROAD step)
    assert "6 forward passes" in proc.stderr
    assert ("Parameters other than the papers': deletion steps=4; road_morf "
            "percentages=(50,).") in proc.stdout
    # the least relevant pixels first: higher is better, and the title says so; a value
    # equal to the paper's is not listed as changed
    proc = invoke(*r18, "--methods", "gradient", "--metrics", "pixel_flipping",
                  "--param", "pixel_flipping.order=lerf", "--param",
                  "pixel_flipping.baseline=black", "--param", "pixel_flipping.steps=2", image)
    assert proc.returncode == 0, proc.stderr
    assert "| pixel flipping (LeRF) ↑ |" in proc.stdout
    assert "Parameters other than the papers': pixel_flipping order='lerf', steps=2." in \
        proc.stdout


def test_faithfulness_correlations_passes_run_once_for_every_method():
    # its perturbed images do not depend on the map: the second method reuses the first's
    # outputs (0 passes), and scores what it scores alone (the same draws, bit for bit)
    from metrics_cases import case

    from deconvviz.analyses.evaluation import compute

    inputs = case(size=12, n=2)
    params = {"faithfulness_correlation": {"runs": 5, "subset_size": 10}}
    result = dv.evaluate(inputs.model, inputs.images, methods="gradient,deconvnet",
                         metrics="faithfulness_correlation", params=params, progress=False)
    passes = {m: result.forward_passes[m]["faithfulness_correlation"] for m in result.methods}
    assert passes == {"gradient": 2 * 6, "deconvnet": 0}
    table = result.to_dict()  # the time each method's maps and metric took, in the CSV
    assert all(t >= 0 for t in table["seconds"] + table["maps_seconds"])
    # the figure says which parameters are not the paper's
    title = result.figure()._suptitle.get_text()
    assert title.endswith("parameters other than the papers': faithfulness_correlation "
                          "runs=5, subset_size=10")
    for method in ("gradient", "deconvnet"):
        alone = Inputs(inputs.model, inputs.images, result.maps[method], inputs.targets,
                       generator=torch.Generator().manual_seed(0))  # both images' maps
        score = compute("faithfulness_correlation", alone, runs=5, subset_size=10)
        assert torch.equal(score.per_image, result.scores[method]["faithfulness_correlation"])
    assert driver.planned_passes(["faithfulness_correlation", "road_morf"], 2, 2, (12, 12),
                                 {}) == 101 * 2 + 9 * 2 * 2
