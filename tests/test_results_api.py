"""Every result type speaks the Result API (docs/api.md, "Results"): ``figure()``, ``save``
by extension (the figure's formats, then the data's; anything else refused, naming them),
``_repr_png_`` where it draws, ``to_dict()``/``to_csv()`` where it holds a table. Each is
made by a real, tiny run: a small CNN on two photos, one epoch of training."""
import csv
import io
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, SMALL
from torch import nn

import deconvviz as dv
from deconvviz._io import FIGURE_FORMATS
from deconvviz._signatures import reset_warnings
from deconvviz.analyses.attribution import Attribution, resolve_target
from deconvviz.analyses.crp_report import ConceptReport, concept_report
from deconvviz.results import NoFigureError, NoTableError, Result

PNG = b"\x89PNG"
PHOTOS = [os.path.join(EXAMPLES, n) for n in ("chelsea.png", "coffee.png")]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def scanned(model):
    return dv.scan(model, PHOTOS, layers=["3"], hits=2, progress=False)


def _draws(result, folder, stem="r", **options):
    """The result draws: a PNG in Jupyter, and each figure format by extension."""
    assert isinstance(result, Result) and result.has_figure()
    assert result._repr_png_()[:4] == PNG
    assert result.figure(**options) is not None
    for ext in (".png", ".svg"):
        path = result.save(folder / f"{stem}{ext}", dpi=40, **options)
        assert path == str(folder / f"{stem}{ext}") and os.path.getsize(path) > 0
    assert open(folder / f"{stem}.png", "rb").read(4) == PNG


def _refuses(result, path, *named):
    with pytest.raises(dv.OutputError) as error:
        result.save(path)
    assert all(ext in str(error.value) for ext in named) and not os.path.exists(path)


def _table(result, columns, rows):
    """``to_dict`` gives the columns, ``to_csv`` the same table as text and as a file."""
    table = result.to_dict()
    assert list(table) == columns and all(len(v) == rows for v in table.values())
    text = result.to_csv()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == rows and list(parsed[0]) == columns
    assert [row[columns[0]] for row in parsed] == [str(v) for v in table[columns[0]]]
    return table, text


def test_attribution_holds_the_map_and_what_it_explains(model, x, tmp_path):
    maps = dv.attribute(model, x, method="guided", target=1).map
    result = Attribution.of(maps, method="guided", target=[1, 1], model=model,
                            rgb=[np.zeros((32, 32, 3), np.uint8)] * 2, images=["a", "b"])
    assert result.map is maps and len(result) == 2 and result.classes == [1, 1]
    assert result.display == "signed" and result.model == "Sequential"
    assert result.formats() == FIGURE_FORMATS + (".pt", ".npy")
    _draws(result, tmp_path)
    assert np.array_equal(np.load(result.save(tmp_path / "a.npy")), maps.numpy())
    saved = torch.load(result.save(tmp_path / "a.pt"), weights_only=True)
    assert torch.equal(saved["map"], maps) and saved["targets"] == ["class 1", "class 1"]
    assert saved["rgb"].shape == (2, 32, 32, 3)
    assert result.to_dict()["method"] == "guided" and result.to_dict()["map"] is maps
    with pytest.raises(NoTableError):
        result.to_csv()
    _refuses(result, tmp_path / "a.csv", ".pt", ".npy")
    # a resolved unit target names the layer and feature; no photo, the map alone
    unit = resolve_target(model, x, None, "3", 2)
    result = Attribution.of(dv.attribute(model, x, method="deconvnet", layer="3", features=2).map,
                            method="deconvnet", target=unit)
    assert result.layer == "3" and result.features == [2] and result.classes is None
    assert result.targets == ["3 #2 (max)"] * 2 and result.rgb is None
    _draws(result, tmp_path, "unit")
    assert Attribution.of(maps[:, :1], method="gradcam").display == "heatmap"
    with pytest.raises(dv.ArgumentError, match=r"\[N, C, H, W\]"):
        Attribution.of(maps[0], method="guided")
    with pytest.raises(dv.ArgumentError, match="one per image"):
        Attribution.of(maps, method="guided", target=[1])


def test_a_scan_saves_its_file_as_pt_and_its_figure_by_extension(model, scanned, tmp_path):
    assert scanned.formats() == FIGURE_FORMATS + (".pt",)
    assert scanned._repr_png_() is None  # its figure runs the model: Jupyter shows the repr
    loaded = dv.load_scan(scanned.save(tmp_path / "s.pt"))
    assert loaded.top("3", 1) == scanned.top("3", 1)
    png = scanned.save(tmp_path / "s.png", dpi=40, layers="3", features="0-1", model=model)
    assert open(png, "rb").read(4) == PNG
    _refuses(scanned, tmp_path / "s.result", ".pt", ".png")
    table, _ = _table(scanned, ["layer", "feature", "rank", "value", "image", "y", "x"],
                      sum(len(scanned.top("3", f)) for f in range(8)))
    assert table["value"][0] == scanned.top("3", 0)[0].value
    # scan(out=...), as `deconvviz scan --out`, still takes any file name
    dv.scan(model, PHOTOS[:1], layers=["3"], hits=1, out=tmp_path / "s.result", progress=False)
    assert dv.load_scan(tmp_path / "s.result").k == 1


def test_an_atlas_draws_its_grid_and_lists_its_units(model, scanned, tmp_path):
    site = dv.atlas(scanned, tmp_path / "atlas", model=model, progress=False)
    _draws(site, tmp_path)
    grid = site.grid()
    png = site.figure()._repr_png_()  # one pixel a pixel
    import cv2

    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == grid.shape
    table, _ = _table(site, ["layer", "unit", "strongest", "hits", "fired", "page"], 8)
    assert table["page"][3] == site.unit_page("3", 3)
    assert site.save(tmp_path / "units.csv").endswith("units.csv")
    _refuses(site, tmp_path / "a.npz", ".csv", ".png")


def test_a_training_run_draws_its_curves_and_tables_its_metrics(shapes, tmp_path):
    run = dv.train("zfnet", shapes / "train", out=tmp_path / "run", epochs=1, save_at=[1],
                   **SMALL)
    _draws(run, tmp_path)
    columns = list(run.metrics[0])
    table, _ = _table(run, columns, 1)
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert next(csv.reader(handle)) == columns  # the columns of metrics.csv
    assert table["train_loss"] == [run.metrics[0]["train_loss"]]
    assert run.save(tmp_path / "m.csv").endswith("m.csv")
    _refuses(run, tmp_path / "m.npz", ".csv")


def test_crp_results_draw_and_save_their_relevance(model, x, tmp_path):
    result = dv.crp(model, x, layer="3", top=3)
    assert result.formats() == FIGURE_FORMATS + (".csv", ".pt")
    _draws(result, tmp_path, "c")
    table, _ = _table(result, ["image", "class", "concept", "relevance", "share"], 6)
    assert table["concept"][:3] == result.concepts
    assert table["share"][4] == pytest.approx(float(result.share[1, 1]))
    saved = torch.load(result.save(tmp_path / "c.pt"), weights_only=True)
    assert torch.equal(saved["heatmaps"], result.heatmaps) and saved["layer"] == "3"
    assert list(csv.DictReader(open(result.save(tmp_path / "c.csv")))) == \
        list(csv.DictReader(io.StringIO(result.to_csv())))

    layer = dv.layer_relevance(model, x, layer="3")
    assert layer.layer == "3" and layer.method == "lrp"
    _draws(layer, tmp_path, "l")
    table, _ = _table(layer, ["image", "class", "channel", "relevance", "share"], 16)
    assert table["relevance"][9] == pytest.approx(float(layer.channel[1, 1]))
    saved = torch.load(layer.save(tmp_path / "l.pt"), weights_only=True)
    assert torch.equal(saved["share"], layer.share)
    _refuses(layer, tmp_path / "l.npz", ".csv", ".pt")


def test_a_concept_report_draws_and_tables_its_concepts(model, scanned, tmp_path):
    report = concept_report(model, PHOTOS[0], "3", top=2, scan=scanned, references=2)
    assert isinstance(report, ConceptReport)
    _draws(report, tmp_path)
    table, _ = _table(report, ["image", "class", "concept", "relevance", "share",
                               "references"], 2)
    assert table["concept"] == report.relevance.concepts and table["references"] == [2, 2]
    data = np.load(report.save(tmp_path / "r.npz"))
    assert data["heatmaps"].shape[0] == 2 and "reference_1_1" in data
    _refuses(report, tmp_path / "r.pt", ".csv", ".npz")


def test_show_reports_what_it_wrote_and_what_failed_and_has_no_figure(model, tmp_path):
    missing = str(tmp_path / "missing.png")
    report = dv.show(model, PHOTOS + [missing], layer="3", top=2, out=str(tmp_path) + "/")
    assert report.formats() == (".csv",) and not report.has_figure()
    with pytest.raises(NoFigureError, match="has no figure"):
        report.figure()
    assert report._repr_png_() is None
    table, _ = _table(report, ["status", "path", "reason"], 3)
    assert table["status"] == ["written", "written", "failed"]
    assert table["path"] == report.written + [missing] and "not found" in table["reason"][2]
    assert report.save(tmp_path / "report.csv").endswith("report.csv")
    _refuses(report, tmp_path / "report.png", ".csv")


def test_filter_figure_is_deprecated_in_favour_of_filters_figure():
    import deconvviz.analyses as analyses

    assert "filter_figure" not in dv.__all__ and "filter_figure" not in analyses.__all__
    reset_warnings()
    with pytest.warns(DeprecationWarning, match=r"filter_figure.*filters\(\.\.\.\)\.figure"):
        top = dv.filter_figure
    with pytest.warns(DeprecationWarning, match="filter_figure"):
        assert analyses.filter_figure is top
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert dv.filter_figure is top


def test_result_lives_where_analyses_and_training_both_import_it():
    import deconvviz.analyses.result as old_home
    import deconvviz.training.recipe as recipe

    assert old_home.Result is Result and issubclass(recipe.TrainResult, Result)
    assert issubclass(dv.ScanResult, Result) and issubclass(dv.AtlasResult, Result)
