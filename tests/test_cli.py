import os

import pytest
from conftest import CHELSEA, EXAMPLES, cli_process, invoke, make_read_only
from PIL import Image

from deconvviz.cli import cli


@pytest.mark.parametrize("command", [[]] + [[name] for name in sorted(cli.commands)])
def test_every_command_has_help(command):
    proc = cli_process(*command, "--help")
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout and len(proc.stdout.splitlines()) > 3


def test_models_lists_the_zoo_and_which_weights_are_cached():
    proc = invoke("models")
    assert proc.returncode == 0
    assert "zfnet" in proc.stdout and "62,357,608" in proc.stdout
    assert "no (random init)" in proc.stdout
    row = next(l for l in proc.stdout.splitlines() if l.startswith("resnet18 "))
    assert row.endswith("no (downloads)")
    import torch

    from deconvviz.data.zoo import get_spec

    folder = os.path.join(torch.hub.get_dir(), "checkpoints")  # the test's own TORCH_HOME
    os.makedirs(folder)
    open(os.path.join(folder, os.path.basename(get_spec("resnet18").weights_enum().url)),
         "wb").close()
    row = next(l for l in invoke("models").stdout.splitlines() if l.startswith("resnet18 "))
    assert row.endswith(" yes")


def test_layers_table():
    proc = invoke("layers", "--model", "zfnet")
    assert proc.returncode == 0
    conv3 = next(line for line in proc.stdout.splitlines() if line.startswith("conv3 "))
    assert "features.relu3" in conv3 and "384x13x13" in conv3 and " 75 " in conv3


@pytest.mark.parametrize("args,message", [
    (["layers", "--model", "nope"], "unknown model 'nope'"),
    (["layers"], "Missing option"),
    (["show", "--model", "zfnet", "--layer", "conv9", "--weights", "none", CHELSEA],
     "layer 'conv9'"),
    (["show", "--model", "zfnet", "--layer", "conv3", "--weights", "none", "missing.jpg"],
     "image not found"),
    (["show", "--model", "zfnet", "--layer", "conv3", "--weights", "none", "--features",
      "1,400", CHELSEA], "valid features are 0 to 383"),
    (["show", "--model", "zfnet", "--layer", "conv3", "--weights", "none", "--out", "x.gif",
      CHELSEA], "unsupported output format"),
    (["show", "--model", "zfnet", "--layer", "conv3", "--weights", "none", "--out",
      "/nonexistent/dir/x.png", CHELSEA], "output folder does not exist"),
    (["show", "--model", "zfnet", "--layer", "conv3", "--weights", "none", "--mode", "mean",
      CHELSEA], "mean"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, args, message):
    proc = invoke(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_unreadable_image_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    proc = invoke("show", "--model", "zfnet", "--layer", "conv1", "--weights", "none", bad,
                  cwd=tmp_path)
    assert proc.returncode == 2 and "not an image" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.jpg"]


def test_debug_shows_the_traceback(tmp_path):
    # In a process of its own: the traceback is what Python prints on the way out. (An
    # error found before torch is imported, so the process takes a fraction of a second.)
    proc = cli_process("show", "--model", "zfnet", "--layer", "conv1", "--features", "1,x",
                       "--debug", CHELSEA, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "ArgumentError: bad feature list '1,x'" in proc.stderr


def test_unwritable_output_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    make_read_only(monkeypatch, folder)
    result = invoke("show", "--model", "zfnet", "--layer", "conv1", "--weights", "none",
                    "--out", str(folder / "x.png"), CHELSEA)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: cannot write to {folder}: Read-only file system"
    assert os.listdir(folder) == []


@pytest.mark.parametrize("model,layer", [("zfnet", "conv3"), ("vgg16", "conv3_3"),
                                         ("googlenet", "inception3a"), ("resnet50", "layer2"),
                                         ("densenet121", "transition1")])
def test_show_end_to_end(tmp_path, model, layer):
    result = invoke("show", "--model", model, "--layer", layer, "--weights", "none",
                    "--top", "4", CHELSEA, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = f"chelsea_{model}_{layer}.png"
    assert result.stdout.strip() == expected
    with Image.open(tmp_path / expected) as img:
        assert img.width > 800 and img.height > 300


@pytest.mark.parametrize("ext", [".png", ".jpg", ".pdf", ".svg"])
def test_output_formats(tmp_path, ext):
    out = tmp_path / f"fig{ext}"
    result = invoke("show", "--model", "zfnet", "--layer", "conv1", "--weights", "none",
                    "--features", "0-3", "--dpi", "100", "--out", str(out), CHELSEA)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    if ext in (".png", ".jpg"):
        with Image.open(out) as img:
            assert img.format == {".png": "PNG", ".jpg": "JPEG"}[ext]
            assert img.width == 450  # the figure is 4.5 in wide for 2x2 tiles, at 100 dpi
    elif ext == ".pdf":
        assert data.startswith(b"%PDF") and b"/MediaBox [ 0 0 324 " in data  # 4.5 in = 324 pt
    else:
        assert b'<svg' in data and b'width="324pt"' in data
    assert [p for p in os.listdir(tmp_path) if p.startswith(".deconvviz-")] == []
    assert out.stat().st_mode & 0o044  # readable by others, as files written normally are


def test_layer_all_and_patches_and_several_images(tmp_path):
    coffee = os.path.join(EXAMPLES, "coffee.png")
    result = invoke("show", "--model", "zfnet", "--layer", "all", "--weights", "none",
                    "--top", "3", CHELSEA, coffee, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["chelsea_zfnet_all.png", "coffee_zfnet_all.png"]
    result = invoke("show", "--model", "zfnet", "--layer", "conv2", "--weights", "none",
                    "--patches", "--top", "4", "--out", "p.pdf", "--combine", CHELSEA, coffee,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["p.pdf"]
