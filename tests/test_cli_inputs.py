"""Inputs a newcomer tries that once ended badly: each gets a clear one-line error and exit
code 2, or the right behaviour; none exits 1 or shows an exception's class name."""
import os
import shutil

import pytest
import torch
from conftest import CHELSEA, EXAMPLES, invoke, make_read_only
from PIL import Image

COFFEE = os.path.join(EXAMPLES, "coffee.png")
ZF = ["--model", "zfnet", "--weights", "none"]
EXCEPTION_NAMES = ("Error:", "Exception", "Traceback", "errno", "Errno")


def one_error_line(proc, message):
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not any(name in errors[0] for name in EXCEPTION_NAMES), errors[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_output_into_proc(tmp_path):
    proc = invoke("show", *ZF, "--layer", "conv1", "--out", "/proc/x.png", CHELSEA, cwd=tmp_path)
    one_error_line(proc, "cannot write to /proc")


def test_scan_into_a_read_only_folder_fails_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    make_read_only(monkeypatch, folder)
    import deconvviz.analyses.scan_loading as scan_module

    monkeypatch.setattr(scan_module, "load_image", lambda *a, **k: pytest.fail("read an image"))
    result = invoke("scan", *ZF, "--layers", "conv1", "--out", str(folder / "r.pt"), EXAMPLES)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: cannot write to {folder}: Read-only file system"


def test_scan_into_a_missing_folder_fails_before_any_work(tmp_path):
    proc = invoke("scan", *ZF, "--layers", "conv1", "--out", str(tmp_path / "no" / "r.pt"),
               EXAMPLES, cwd=tmp_path)
    one_error_line(proc, "output folder does not exist")
    assert "scan zfnet" not in proc.stderr  # no progress bar: nothing was scanned


def test_weights_that_are_a_photo(tmp_path):
    photo = tmp_path / "text.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    proc = invoke("show", "--model", "zfnet", "--weights", str(photo), "--layer", "conv1",
               CHELSEA, cwd=tmp_path)
    one_error_line(proc, "it is not a file written by torch.save (it looks like a JPEG image)")


def test_images_with_the_same_stem_get_their_own_files(tmp_path):
    for ext in ("tiff", "bmp"):
        Image.open(CHELSEA).convert("RGB").save(tmp_path / f"c.{ext}")
    proc = invoke("show", *ZF, "--layer", "conv1", "--top", "2", "c.tiff", "c.bmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["c_tiff_zfnet_conv1.png", "c_bmp_zfnet_conv1.png"]
    assert (tmp_path / "c_tiff_zfnet_conv1.png").exists()
    assert (tmp_path / "c_bmp_zfnet_conv1.png").exists()


def test_a_bad_image_among_good_ones(tmp_path):
    shutil.copy(CHELSEA, tmp_path / "good.png")
    shutil.copy(COFFEE, tmp_path / "good2.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    proc = invoke("show", *ZF, "--layer", "conv1", "--top", "2", "good.png", "bad.jpg",
               "good2.png", cwd=tmp_path)
    one_error_line(proc, "bad.jpg")
    assert proc.stdout.split() == ["good_zfnet_conv1.png", "good2_zfnet_conv1.png"]
    assert (tmp_path / "good2_zfnet_conv1.png").exists()
    error = next(l for l in proc.stderr.splitlines() if "bad.jpg" in l)
    assert error.startswith("error:")  # on its own line, not glued to the progress bar


def test_top_beyond_one_figure(tmp_path):
    proc = invoke("show", *ZF, "--layer", "conv3", "--top", "5000", CHELSEA, cwd=tmp_path)
    one_error_line(proc, "5000 is not in the range 1<=x<=64")
    assert os.listdir(tmp_path) == []


def test_more_features_than_one_figure_holds(tmp_path):
    proc = invoke("show", "--model", "alexnet", "--weights", "none", "--layer", "fc8",
               "--features", "0-64", CHELSEA, cwd=tmp_path)
    one_error_line(proc, "65 features asked for; one figure holds at most 64")
    assert os.listdir(tmp_path) == []


def test_top_beyond_the_layers_features():
    from torch import nn

    import deconvviz as dv

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(dv.ArgumentError, match="layer '1' has 4 features; ask for top 4"):
        dv.project(model, CHELSEA, layer="1", top=8)
    assert len(dv.project(model, CHELSEA, layer="1", top=4)) == 4


def test_bare_command_prints_the_help(tmp_path):
    proc = invoke(cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: ")
    assert "Commands:" in proc.stdout and proc.stderr == ""


def test_model_names_are_case_insensitive(tmp_path):
    proc = invoke("layers", "--model", "VGG16", cwd=tmp_path)
    assert proc.returncode == 0 and "conv3_3" in proc.stdout
    proc = invoke("layers", "--model", "VGG17", cwd=tmp_path)
    one_error_line(proc, "Did you mean 'vgg19', 'vgg16'?")


def test_no_input_error_exits_1_or_names_an_exception(tmp_path):
    """Every error message above, and the usual slips, read as sentences."""
    slips = [
        ["show", *ZF, "--layer", "conv3", "--features", "3,x", CHELSEA],
        ["show", *ZF, "--layer", "conv3", "--out", "fig.gif", CHELSEA],
        ["show", *ZF, "--layer", "conv3", "--out", str(tmp_path / "nowhere" / "f.png"),
         CHELSEA],
        ["show", *ZF, "--layer", "conv3", "--top", "0", CHELSEA],
        ["scan", *ZF, "--layers", "conv1", "--out", "r.pt", str(tmp_path / "nothing")],
        ["figure", str(tmp_path / "missing.pt"), "--out", "f.png"],
        ["show", *ZF, "--layer", "conv3", "--device", "tpu", CHELSEA],
    ]
    for args in slips:
        proc = invoke(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert len(errors) == 1, (args, proc.stderr)
        assert not any(name in errors[0] for name in EXCEPTION_NAMES), errors[0]


def test_the_python_api_reports_bad_images_and_keeps_going(tmp_path):
    import deconvviz as dv

    (tmp_path / "bad.png").write_bytes(b"")
    model = dv.load_model("zfnet", weights=None)
    report = dv.show(model, [CHELSEA, tmp_path / "bad.png"], layer="conv1", top=2,
                     out=str(tmp_path / "f.png"))
    assert report.written == [str(tmp_path / "f_chelsea.png")]
    assert [p for p, _ in report.failed] == [str(tmp_path / "bad.png")]
    assert "empty" in report.failed[0][1]
    assert torch.is_tensor(dv.project(model, CHELSEA, layer="conv1", top=1).pixels)


def _a_training_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({}, run / "epoch_1.pt")
    return run


@pytest.mark.parametrize("args,message", [
    # each once ended in a raw IndexError, RuntimeError or a wrong sentence
    (["show", *ZF, "--layer", "", CHELSEA], "layer '' has an empty item"),
    (["show", *ZF, "--layer", "conv1,,conv2", CHELSEA], "has an empty item"),
    (["scan", *ZF, "--layers", "conv1,", "--out", "s.pt", EXAMPLES], "--layers 'conv1,' has"),
    (["layers", "--model", "zfnet", "--input-size", "8"],
     "pass the input size the model was made for"),
    (["show", *ZF, "--layer", "conv1", "--dpi", "0", CHELSEA], "'--dpi': 0 is not in the range"),
    (["show", *ZF, "--layer", "conv1", "--dpi", "-5", CHELSEA], "'--dpi': -5 is not in"),
    (["figure", "missing.pt", "--dpi", "0", "--out", "f.png"], "'--dpi': 0 is not in"),
])
def test_raw_errors_are_now_one_line(tmp_path, args, message):
    proc = invoke(*args, cwd=tmp_path)
    one_error_line(proc, message)
    assert "While executing" not in proc.stderr and "scan zfnet" not in proc.stderr


def test_dpi_is_checked_before_any_work(tmp_path, monkeypatch):
    import deconvviz.analyses.projection as projection

    monkeypatch.setattr(projection, "load_image", lambda *a, **k: pytest.fail("did work"))
    one_error_line(invoke("show", *ZF, "--layer", "conv1", "--dpi", "-5", CHELSEA,
                          cwd=tmp_path), "--dpi")


def test_a_weights_folder_is_named_as_a_folder(tmp_path):
    run = _a_training_folder(tmp_path)
    proc = invoke("show", "--model", "zfnet", "--weights", run, "--layer", "conv1", CHELSEA,
                  cwd=tmp_path)
    one_error_line(proc, f"weights {run} is a folder, not a checkpoint file; it holds a "
                         f"training run: give one of its checkpoints, e.g. {run / 'epoch_1.pt'}")


def test_a_corrupt_checkpoint_gets_no_unsafe_advice(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    proc = invoke("show", "--model", "zfnet", "--weights", bad, "--layer", "conv1", CHELSEA,
                  cwd=tmp_path)
    one_error_line(proc, f"cannot read checkpoint {bad}")
    assert "weights_only" not in proc.stderr and "corrupted" not in proc.stderr


@pytest.mark.parametrize("feature,message", [
    (2.5, "feature 2.5 is not an index"), ("3", "feature '3' is not an index"),
    (True, "feature True is not an index"), ([1, 2.0], "feature 2.0 is not an index"),
    (96, "valid features are 0 to 95")])
def test_python_features_that_are_not_indices(feature, message):
    import deconvviz as dv

    net = dv.Deconvnet(dv.load_model("zfnet", weights=None))
    with pytest.raises(dv.ArgumentError, match=message.replace("[", r"\[")):
        net.project(torch.zeros(1, 3, 64, 64), "conv1", features=feature)


@pytest.mark.parametrize("x,message", [
    (torch.zeros(1, 1, 64, 64), "1 channel(s) but the model's first convolution takes 3 "
                                "(repeat a grey channel"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.float64), "images are torch.float64 but the "
                                                     "model's weights are torch.float32"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.float16), "images are torch.float16"),
    (torch.zeros(1, 3, 8, 8), "the model cannot run on images of shape [1, 3, 8, 8]")])
def test_python_images_the_model_cannot_take(x, message):
    import re

    import deconvviz as dv

    net = dv.Deconvnet(dv.load_model("zfnet", weights=None))
    with pytest.raises(dv.ArgumentError, match=re.escape(message)) as info:
        net.project(x, "conv2", features=0)
    assert "While executing" not in str(info.value)


def test_list_layers_of_a_cnn_made_for_small_inputs_says_to_pass_the_size():
    import deconvviz as dv

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 62 * 62, 2)).eval()
    with pytest.raises(dv.ArgumentError, match="input_size=N"):
        dv.list_layers(model)
    assert len(dv.list_layers(model, input_size=64)) >= 3


def test_project_takes_a_tensor_or_a_pil_image_as_well_as_a_path():
    import deconvviz as dv

    model = dv.load_model("zfnet", weights=None)
    x, rgb = dv.load_image(CHELSEA, model)
    by_path = dv.project(model, CHELSEA, layer="conv2", features=[3])
    with Image.open(CHELSEA) as photo:
        by_pil = dv.project(model, photo, layer="conv2", features=[3])
    by_tensor = dv.project(model, x, layer="conv2", features=[3])
    assert torch.equal(by_pil.pixels, by_path.pixels)
    assert torch.equal(by_tensor.pixels, by_path.pixels)
    assert abs(by_tensor.rgb.astype(int) - rgb.astype(int)).max() <= 1  # undone normalisation
    with pytest.raises(dv.ArgumentError, match="images must be a file path, a PIL image"):
        dv.project(model, 42, layer="conv2")


def test_view_crop_crops_each_row_of_a_several_layer_figure(tmp_path):
    # --view was once ignored with several layers: crop and full wrote the same bytes.
    outputs = {}
    for view in ("crop", "full"):
        out = tmp_path / f"{view}.png"
        proc = invoke("show", *ZF, "--layer", "conv1,conv2,conv5", "--view", view, "--top",
                      "2", "--dpi", "60", "--out", out, CHELSEA)
        assert proc.returncode == 0, proc.stderr
        outputs[view] = out.read_bytes()
    assert outputs["crop"] != outputs["full"]
    import deconvviz as dv

    model = dv.load_model("zfnet", weights=None)
    rows = [dv.project(model, CHELSEA, layer=layer, top=2) for layer in ("conv1", "conv5")]
    from deconvviz import figures

    fig = figures.layer_overview(rows, crop=[True, False])
    tiles = [ax.images[0].get_array().shape[0] for ax in fig.axes if ax.images][1:]  # photo
    assert tiles[:2] == [rows[0].geometry.size[0]] * 2 and tiles[2:] == [224, 224]


def test_a_whole_map_projection_is_not_cropped_to_one_field(tmp_path):
    proc = invoke("show", *ZF, "--layer", "conv2", "--mode", "map", "--view", "crop", CHELSEA,
                  cwd=tmp_path)
    one_error_line(proc, "view 'crop' shows one unit's receptive field, but mode 'map'")
    assert os.listdir(tmp_path) == []


def test_more_random_features_than_the_layer_has_is_refused(tmp_path):
    import deconvviz as dv

    result_path = tmp_path / "s.pt"
    dv.scan(dv.load_model("zfnet", weights=None), [CHELSEA, COFFEE], layers=["conv1"], hits=1,
            out=result_path, progress=False)
    proc = invoke("figure", result_path, "--layer", "conv1", "--features", "random:1000",
                  "--out", tmp_path / "f.png")
    one_error_line(proc, "random:1000 asks for 1000 of the layer's 96 features; use random:1 "
                         "to random:96, or 0-95 for all of them")


def test_a_reader_that_stops_early_ends_the_command_quietly(monkeypatch):
    # `deconvviz models | head -2`: the pipe closes under the listing; the command stops
    # with the shell's code for a broken pipe (141) and no "error: Broken pipe" line
    import click
    from click.testing import CliRunner

    from deconvviz.cli import base

    discarded = []
    monkeypatch.setattr(base, "_discard_stdout", lambda: discarded.append(True))

    @click.command()
    @base.friendly
    def listing():
        click.echo("model")
        raise BrokenPipeError(32, "Broken pipe")

    got = CliRunner().invoke(listing, [])
    assert got.exit_code == 141 and discarded == [True]
    assert "Broken pipe" not in got.output
