"""The public API speaks one vocabulary (docs/api.md, "The vocabulary"): every public function
and method is walked, its parameters held to the glossary, each function that takes images
called with every documented form, and each that runs a model given one in training mode."""
import inspect
import os
import shutil

import pytest
import torch
from conftest import CHELSEA, EXAMPLES, assert_untouched, snapshot
from PIL import Image
from torch import nn

import deconvviz as dv
from deconvviz._signatures import reset_warnings
from deconvviz.analyses.result import Result
from deconvviz.engine.guard import is_guarded

# A word that means something else in the glossary, and the word to use instead.
BANNED = {"x": "images", "image": "images", "source": "images", "units": "features",
          "unit": "features", "concepts": "features", "concept": "features",
          "on_image": "progress", "on_checkpoint": "progress", "model_or_name": "model",
          "seed_tensor": "signal"}
# Where a word has its glossary meaning only in one place.
ONLY_IN = {"data": {"train"}, "callback": {"train"}}
# A result's accessor reads one feature's entry: ``feature`` (an int) is its index.
ACCESSORS = {"ScanResult.top", "ScanResult.relevance_top", "FeatureVisResult.row_of",
             "FeatureVisResult.image", "AtlasResult.unit_page"}
# Public functions with a ``model`` that never run it (they read its weights or its info).
READS_ONLY = {"weights_digest", "model_info", "load_image", "filters"}


def public_callables():
    """(qualified name, function) for every public function and every public method of a
    public class."""
    found = []
    for name in dv.__all__:
        obj = getattr(dv, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj) and obj.__module__.startswith("deconvviz"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                found.append((f"{name}.{attr}", member))
    return found


CALLABLES = public_callables()


def parameters(fn):
    params = list(inspect.signature(fn).parameters.values())
    return params[1:] if params and params[0].name == "self" else params


@pytest.mark.parametrize("qualname,fn", CALLABLES, ids=[q for q, _ in CALLABLES])
def test_every_parameter_is_a_glossary_word(qualname, fn):
    short = qualname.split(".")[-1]
    for p in parameters(fn):
        assert p.name not in BANNED, f"{qualname}({p.name}=): the glossary says {BANNED[p.name]}"
        if p.name in ONLY_IN:
            assert short in ONLY_IN[p.name], f"{qualname}({p.name}=) outside {ONLY_IN[p.name]}"
        if p.name == "feature":
            assert qualname in ACCESSORS, f"{qualname}(feature=): the glossary says features"


@pytest.mark.parametrize("qualname,fn", CALLABLES, ids=[q for q, _ in CALLABLES])
def test_keyword_only_after_the_first_two(qualname, fn):
    positional = [p.name for p in parameters(fn)
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 2, f"{qualname}: {positional[2:]} should be keyword-only"
    names = [p.name for p in parameters(fn)]
    if "model" in names and "images" in names:
        assert names[:2] == ["model", "images"], qualname


def runs_a_model(qualname, fn):
    names = [p.name for p in parameters(fn)]
    short = qualname.split(".")[-1]
    if short in READS_ONLY:
        return False
    return "model" in names or qualname.startswith("Projector.") and "images" in names


RUNNING = [(q, f) for q, f in CALLABLES if runs_a_model(q, f)]


def test_the_model_running_list_is_what_it_should_be():
    names = {q for q, _ in RUNNING}
    for expected in ("attribute", "compare", "sanity_check", "crp", "layer_relevance",
                     "occlusion", "invariance", "correspondence", "project", "show", "scan",
                     "evolution", "feature_vis", "atlas", "train", "explore", "list_layers",
                     "evaluate"):
        assert expected in names, expected


@pytest.mark.parametrize("qualname,fn", RUNNING, ids=[q for q, _ in RUNNING])
def test_every_model_running_function_passes_the_one_guard(qualname, fn):
    names = {p.name for p in parameters(fn)}
    assert is_guarded(fn), f"{qualname} does not pass through engine.guard.runs_model"
    if not qualname.startswith("Projector."):  # a projector computes where its model is,
        assert "device" in names and "precision" in names, qualname  # at its own precision


def test_the_guard_list_holds_every_guarded_function():
    """Nothing guarded is missing from the list the tests walk."""
    guarded = {q for q, f in CALLABLES if is_guarded(f)}
    assert guarded <= {q for q, _ in RUNNING}


# --- every documented form of ``images``, for every function that takes them -------------

def tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(4), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    one, two = root / "one", root / "two"
    one.mkdir()
    two.mkdir()
    shutil.copy(CHELSEA, one / "chelsea.png")
    shutil.copy(CHELSEA, two / "chelsea.png")
    shutil.copy(os.path.join(EXAMPLES, "coffee.png"), two / "coffee.png")
    (two / "README.md").write_text("not an image")  # skipped in a folder
    return {"one": str(one), "two": str(two)}


def forms(photos, count):
    """Each documented form holding ``count`` images (1 or 2)."""
    paths = sorted(str(p) for p in __import__("pathlib").Path(
        photos["one" if count == 1 else "two"]).glob("*.png"))
    x, _ = dv.load_image(paths[0])
    pil = Image.open(paths[0]).convert("RGB")
    many = (lambda item: [item] * count)
    return {
        "path": paths[0] if count == 1 else paths,
        "folder": photos["one" if count == 1 else "two"],
        "list of paths": paths,
        "PIL image": pil if count == 1 else many(pil),
        "tensor NCHW": x.repeat(count, 1, 1, 1),
        "tensor CHW": x[0] if count == 1 else many(x[0]),
    }


FORMS = ["path", "folder", "list of paths", "PIL image", "tensor NCHW", "tensor CHW"]


def _checkpoint(model, tmp_path):
    path = tmp_path / "epoch_1.pt"
    torch.save(model.state_dict(), path)
    return str(path)


# name -> (images needed, call(model, images, tmp_path))
CALLS = {
    "attribute": (1, lambda m, i, t: dv.attribute(m, i, method="gradient")),
    "compare": (1, lambda m, i, t: dv.compare(m, i, methods=["gradient"])),
    "sanity_check": (1, lambda m, i, t: dv.sanity_check(m, i, methods=["gradient"],
                                                        layers=["8"])),
    "crp": (1, lambda m, i, t: dv.crp(m, i, layer="4", top=2)),
    "layer_relevance": (1, lambda m, i, t: dv.layer_relevance(m, i, layer="4")),
    "occlusion": (1, lambda m, i, t: dv.occlusion(m, i, layer="4", size=112, stride=112)),
    "invariance": (1, lambda m, i, t: dv.invariance(m, i, transform="scale", values=[1.0],
                                                    layers=["4"], progress=False)),
    "correspondence": (2, lambda m, i, t: dv.correspondence(
        m, i, parts={"box": [[0, 0, 50, 50], [10, 10, 50, 50]]}, layers=["4"], random=1,
        progress=False)),
    "project": (1, lambda m, i, t: dv.project(m, i, layer="4", top=2)),
    "show": (1, lambda m, i, t: dv.show(m, i, layer="4", top=2, out=str(t) + os.sep)),
    "scan": (2, lambda m, i, t: dv.scan(m, i, layers=["4"], hits=2, progress=False)),
    "evolution": (2, lambda m, i, t: dv.evolution(
        m, i, checkpoints=[_checkpoint(m, t)], layers=["4"], features=[0, 1],
        progress=False)),
    "Projector.project": (1, lambda m, i, t: dv.Deconvnet(m).project(i, "4", features=[0])),
    "Projector.record": (1, lambda m, i, t: dv.Deconvnet(m).record(i, "4")),
    "Projector.project_units": (1, lambda m, i, t: dv.Deconvnet(m).project_units(
        i, "4", positions=[(0, 1, 0, 0)])),
    "explore": (1, lambda m, i, t: dv.explore(m, i)),
    "evaluate": (1, lambda m, i, t: dv.evaluate(m, i, methods="gradient",
                                                metrics="sparseness", progress=False)),
}
NOT_RESULTS = {"Projector.project", "Projector.record", "Projector.project_units",
               "explore"}  # a tensor, a recording, a widget


def test_every_function_that_takes_images_is_called_below():
    takes = {q for q, f in CALLABLES if "images" in [p.name for p in parameters(f)]}
    assert takes <= set(CALLS), takes - set(CALLS)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_images_in_every_documented_form(name, form, photos, tmp_path):
    count, call = CALLS[name]
    model = tiny_model()
    images = forms(photos, count)[form]
    if name == "explore":
        pytest.importorskip("ipywidgets")
    result = call(model, images, tmp_path)
    if name not in NOT_RESULTS:
        assert isinstance(result, Result), f"{name} returned {type(result).__name__}"


def test_every_result_type_is_a_result():
    for name in dv.__all__:
        obj = getattr(dv, name)
        if inspect.isclass(obj) and (name.endswith("Result") or name in (
                "Projections", "Comparison", "ShowReport", "ConceptRelevance",
                "LayerRelevance", "Attribution")):
            assert issubclass(obj, Result), name


# --- the guard: a model in training mode is refused before anything runs ------------------

@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_model_in_training_mode_is_refused_and_left_unchanged(name, photos, tmp_path):
    count, call = CALLS[name]
    model = tiny_model().train()
    before = snapshot(model)
    with pytest.raises(dv.ArgumentError) as caught:
        call(model, forms(photos, count)["tensor NCHW"], tmp_path)
    assert str(caught.value).startswith("the model is in training mode (BatchNorm2d at '1'")
    assert str(caught.value).endswith("call model.eval() first")
    assert_untouched(model, before)  # BatchNorm's running statistics too


def test_feature_vis_and_train_pass_the_guard_too(tmp_path):
    model = tiny_model().train()
    before = snapshot(model)
    with pytest.raises(dv.ArgumentError, match="^the model is in training mode"):
        dv.feature_vis(model, "4", features=[0], steps=1, image_size=16, input_size=16)
    assert_untouched(model, before)


def test_hooks_and_modes_are_restored_after_an_error():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(dv.ArgumentError):
        dv.attribute(model, torch.zeros(1, 3, 32, 32), method="gradient", layer="4",
                     features=99)  # out of range: raised after the forward pass
    assert_untouched(model, before)


def test_device_runs_a_copy_elsewhere_and_leaves_the_model_where_it_is():
    model = tiny_model()
    x = torch.randn(1, 3, 32, 32)
    here = dv.attribute(model, x, method="gradient").map
    there = dv.attribute(model, x, method="gradient", device="cpu").map
    assert torch.equal(here, there)
    with pytest.raises(dv.ArgumentError, match="unknown device"):
        dv.attribute(model, x, method="gradient", device="tpu")


# --- old names: one release of grace ---------------------------------------------------------

OLD_CALLS = [
    ("attribute", "x=", lambda m, x: dv.attribute(m, x=x, method="gradient")),
    ("attribute", "by position", lambda m, x: dv.attribute(m, x, "gradient")),
    ("attribute", "feature=", lambda m, x: dv.attribute(m, x, method="gradient", layer="4",
                                                         feature=1)),
    ("compare", "feature=", lambda m, x: dv.compare(m, x, methods=["gradient"], layer="4",
                                                     feature=1)),
    ("compare", "by position", lambda m, x: dv.compare(m, x, ["gradient"])),
    ("sanity_check", "x=", lambda m, x: dv.sanity_check(m, x=x, methods=["gradient"],
                                                         layers=["8"])),
    ("crp", "concepts=", lambda m, x: dv.crp(m, x, layer="4", concepts=[0, 1])),
    ("crp", "by position", lambda m, x: dv.crp(m, x, "4", [0, 1])),
    ("layer_relevance", "by position", lambda m, x: dv.layer_relevance(m, x, "4")),
    ("occlusion", "feature=", lambda m, x: dv.occlusion(m, x, layer="4", feature=1, size=16,
                                                         stride=16)),
    ("occlusion", "by position", lambda m, x: dv.occlusion(m, x, "4", 1, None, 16, 16)),
    ("invariance", "by position", lambda m, x: dv.invariance(m, x, "scale", [1.0], ["4"],
                                                            progress=False)),
    ("invariance", "images= labels", lambda m, x: dv.invariance(
        m, x, transform="scale", values=[1.0], layers=["4"], images=["a"], progress=False)),
    ("project", "image=", lambda m, x: dv.project(m, image=x, layer="4", top=1)),
    ("project", "by position", lambda m, x: dv.project(m, x, "4", top=1)),
    ("feature_vis", "units=", lambda m, x: dv.feature_vis(m, "4", units=[0], steps=1,
                                                           image_size=16, input_size=16)),
    ("feature_vis", "by position", lambda m, x: dv.feature_vis(m, "4", [0], steps=1,
                                                                image_size=16, input_size=16)),
]


@pytest.mark.parametrize("name,old,call", OLD_CALLS, ids=[f"{n}-{o}" for n, o, _ in OLD_CALLS])
def test_an_old_spelling_works_and_warns_once(name, old, call):
    reset_warnings()
    model = tiny_model()
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(DeprecationWarning, match=f"^{name}: .* is deprecated .*; use "):
        first = call(model, x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        second = call(model, x)  # once per process: no second warning
    assert type(first) is type(second)


def test_old_spellings_give_the_same_answer_as_the_new():
    reset_warnings()
    model = tiny_model()
    x = torch.randn(1, 3, 32, 32)
    new = dv.attribute(model, x, method="gradient", layer="4", features=1).map
    with pytest.warns(DeprecationWarning):
        old = dv.attribute(model, x, "gradient", None, "4", 1).map
    assert torch.equal(new, old)
    with pytest.warns(DeprecationWarning):
        result = dv.occlusion(model, x, "4", 1, None, 16, 16)
    assert result.features == [1] and result.size == 16 and result.stride == 16


def test_old_progress_callbacks_are_adapted():
    reset_warnings()
    model = tiny_model()
    seen = []
    with pytest.warns(DeprecationWarning, match="progress"):
        dv.compare(model, torch.randn(1, 3, 32, 32), methods=["gradient", "deconvnet"],
                   progress=seen.append)  # the old shape: progress(method)
    assert seen == ["gradient", "deconvnet"]
    calls = []
    dv.compare(model, torch.randn(1, 3, 32, 32), methods=["gradient"],
               progress=lambda done, total, label: calls.append((done, total, label)))
    assert calls == [(1, 1, "gradient")]


def test_a_positional_argument_too_many_is_refused_with_a_sentence():
    with pytest.raises(dv.ArgumentError, match="takes 2 arguments by position"):
        dv.crp(tiny_model(), torch.randn(1, 3, 32, 32), "4", [0], 0, "extra")


@pytest.mark.parametrize("alias,new", [("DeconvStep", "ReverseStep"),
                                       ("filter_figure", "filters")])
def test_removed_aliases_resolve_with_a_warning(alias, new):
    reset_warnings()
    import deconvviz

    deconvviz.__dict__.pop(alias, None)
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(deconvviz, alias) is not None
    assert alias not in deconvviz.__all__


def test_results_that_hold_a_table_give_it_as_columns_and_csv(tmp_path):
    model = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    results = [dv.sanity_check(model, x[:1], methods=["gradient"], layers=["8"]),
               dv.invariance(model, x, transform="scale", values=[1.0, 1.2], layers=["4"],
                             progress=False),
               dv.correspondence(model, x, parts={"box": [[0, 0, 8, 8], [4, 4, 8, 8]]},
                                 layers=["4"], random=1, progress=False),
               dv.filters(model, "0")]
    for result in results:
        table = result.to_dict()
        rows = {len(column) for column in table.values()}
        assert len(rows) == 1 and rows.pop() >= 1, type(result).__name__
        path = result.to_csv(tmp_path / f"{type(result).__name__}.csv")
        assert open(path).read().splitlines()[0].split(",") == list(table)


def test_the_api_page_holds_every_public_signature_as_generated():
    import importlib.util

    root = os.path.join(os.path.dirname(__file__), "..")
    spec = importlib.util.spec_from_file_location(
        "api_table", os.path.join(root, "scripts", "api_table.py"))
    api_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_table)
    page = open(os.path.join(root, "docs", "api.md"), encoding="utf-8").read()
    assert f"{api_table.START}\n{api_table.rows()}\n{api_table.END}" in page, \
        "docs/api.md's signature table is out of date: run scripts/api_table.py"
    for qualname, _ in CALLABLES:
        assert f"| `{qualname}` |" in page, qualname


def test_list_layers_and_the_atlas_refuse_training_mode_too(photos, tmp_path):
    model = tiny_model()
    result = dv.scan(model, photos["two"], layers=["4"], hits=1, progress=False)
    model.train()
    before = snapshot(model)
    for call in (lambda: dv.list_layers(model),
                 lambda: dv.atlas(result, tmp_path / "site", model=model, progress=False)):
        with pytest.raises(dv.ArgumentError, match="^the model is in training mode"):
            call()
        assert_untouched(model, before)
    assert not (tmp_path / "site").exists()
