"""What a third newcomer found at the command line (issue 35, items 11 to 18, 20 and 21):
errors that blame the wrong thing or come late, flags that did nothing, titles that claim
TF32 on a CPU, one Ctrl-C convention, output paths through a missing folder, an estimate
before a long optimisation, the CPU build's hint, and small things in tables and figures."""
import collections
import dataclasses
import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import CHELSEA, invoke
from PIL import Image
from torch import nn

import deconvviz as dv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUEEZE = "torchvision:squeezenet1_1"  # the cheapest torchvision CNN with zoo handling
ZF = ["--model", "zfnet", "--weights", "none"]


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()


def one_error(done, message, code=2):
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr


# Each command errs before the model is built, in a process that never imports torch.
NO_MODEL_ERRORS = [
    (["show", "--model", "zfnet", "--layer", "", CHELSEA], "--layer '' has an empty item"),
    (["show", "--model", "zfnet", "--weights", "FOLDER", "--layer", "conv1", CHELSEA],
     "is a folder, not a checkpoint file"),
    (["optimize", *ZF, "--layer", " "], "--layer is empty"),
    (["crp", *ZF, "--layer", "", "--out", "c.png", CHELSEA], "--layer is empty"),
    (["invariance", *ZF, "--layers", "", "--out", "i.png", CHELSEA], "--layers '' has an"),
    (["filters", "--model", "zfnet", "--weights", "FOLDER", "--out", "f.png"], "is a folder"),
    (["optimize", *ZF, "--layer", "conv5", "--lr", "inf"], "lr must be a finite number"),
    (["optimize", *ZF, "--layer", "conv5", "--diversity", "5"], "images_per_unit=2"),
    (["scan", *ZF, "--layers", "conv1", "--relevance-class", "3", "--out", "s.pt", CHELSEA],
     "--rank relevance"),
    (["atlas", "s.pt", "--out", "site", "--feature-vis-steps", "7"], "add --feature-vis"),
    (["scan", *ZF, "--layers", "conv1", "--out", "nodir/../s.pt", CHELSEA],
     "output folder does not exist: nodir (in nodir/../s.pt)"),
    (["crp", *ZF, "--layer", "conv5", "--references", "0", "--out", "c.png", CHELSEA],
     "--references"),
]


def test_errors_that_need_no_model_come_before_torch(tmp_path):
    (tmp_path / "FOLDER").mkdir()
    script = ("import sys\nfrom deconvviz.cli import cli\n"
              "for args in %r:\n"
              "    try:\n"
              "        cli.main(args, prog_name='deconvviz')\n"
              "    except SystemExit as done:\n"
              "        print('exit', done.code, file=sys.stderr)\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch', "
              "file=sys.stderr)\n") % [args for args, _ in NO_MODEL_ERRORS]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "no torch", done.stderr
    answers = list(zip(lines[:-1:2], lines[1:-1:2]))
    assert len(answers) == len(NO_MODEL_ERRORS), done.stderr
    for (args, message), (error, code) in zip(NO_MODEL_ERRORS, answers):
        assert error.startswith("error:") and message in error, (args, error)
        assert code == "exit 2", (args, code)
    assert os.listdir(tmp_path) == ["FOLDER"]  # nothing written, no lock left


def test_flags_that_would_do_nothing_are_refused_in_python(tmp_path):
    net = tiny()
    kwargs = dict(steps=1, image_size=16, input_size=16)
    with pytest.raises(dv.ArgumentError, match="give objective='neuron'"):
        dv.feature_vis(net, "1", features=[0], position=(3, 3), **kwargs)
    with pytest.raises(dv.ArgumentError, match="images_per_unit=2 or more"):
        dv.feature_vis(net, "1", features=[0], diversity=5.0, **kwargs)
    for lr in (float("inf"), float("nan")):
        with pytest.raises(dv.ArgumentError, match="finite"):
            dv.feature_vis(net, "1", features=[0], lr=lr, **kwargs)
    with pytest.raises(dv.ArgumentError, match="rank='relevance'"):
        dv.scan(net, [CHELSEA], layers=["1"], relevance_target=3, progress=False)


def test_a_scan_of_another_model_is_named_as_such(tmp_path):
    from deconvviz.analyses.crp_report import concept_report

    squeeze = dv.load_model(SQUEEZE, weights=None)
    dv.scan(squeeze, [CHELSEA], layers=["features.0"], hits=1, progress=False,
            out=tmp_path / "s.pt")
    done = invoke("crp", "--model", "alexnet", "--weights", "none", "--layer", "conv5",
                  "--scan", tmp_path / "s.pt", "--out", tmp_path / "c.png", CHELSEA)
    one_error(done, f"the scan is of {SQUEEZE}, not alexnet")
    assert "weights" not in done.stderr
    # and the report says "untrained weights" as other figures do, not "(random)"
    report = concept_report(squeeze, CHELSEA, "features.0", top=1,
                               scan=dv.load_scan(tmp_path / "s.pt"), references=1)
    assert "(untrained weights)" in report.title and "(random)" not in report.title
    with pytest.raises(dv.ArgumentError, match="references must be at least 1"):
        concept_report(squeeze, CHELSEA, "features.0", scan=dv.load_scan(tmp_path / "s.pt"),
                       references=0)


def test_titles_claim_tf32_only_where_cuda_ran_with_it():
    net = tiny()
    result = dv.feature_vis(net, "1", features=[0], steps=1, image_size=16, input_size=16,
                            precision="tf32")
    assert (result.precision, result.device) == ("tf32", "cpu")
    assert "TF32" not in result.settings()
    on_gpu = dataclasses.replace(result, device="cuda")
    assert "; on cuda, TF32, not exact;" in on_gpu.settings()
    assert "TF32" not in dataclasses.replace(on_gpu, precision="exact").settings()
    p = dv.project(net, CHELSEA, layer="1", features=[0], precision="tf32")
    assert "TF32" not in p.title
    assert dataclasses.replace(p, device="cuda").title.endswith(" - on cuda, TF32, not exact")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command", ["scan", "optimize", "atlas"])
def test_ctrl_c_is_exit_130_with_one_line_in_every_command(command, tmp_path, monkeypatch):
    import deconvviz.analyses
    import deconvviz.data.zoo

    monkeypatch.setattr(deconvviz.data.zoo, "load_model", _interrupt)
    monkeypatch.setattr(deconvviz.analyses, "load_scan", _interrupt)
    args = {"scan": ["scan", *ZF, "--layers", "conv1", "--out", "s.pt", CHELSEA],
            "optimize": ["optimize", *ZF, "--layer", "conv5"],
            "atlas": ["atlas", "s.pt", "--out", "site"]}[command]
    done = invoke(*args, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["error: interrupted (Ctrl-C)"]


def test_an_estimate_comes_before_a_long_optimisation(tmp_path, monkeypatch):
    import functools

    import deconvviz._progress as progress
    import deconvviz.cli.projections as projections

    said = []
    clock = iter([0.0, 2.0, 3.0])  # the first step's report, the second's two seconds later
    estimate = progress.StepEstimate(said.append, steps=512, device="cpu", clock=clock.__next__,
                                     hint="--steps fewer for a quicker look")
    for done in (16, 32, 48):  # 16 units a step: 2 s per step, 512 steps
        estimate(done, 16 * 512)
    assert said == ["about 17 min on this CPU (512 steps × 16 units); --steps fewer for a "
                    "quicker look"]
    # the command wires it (here with no threshold, as a long run would)
    monkeypatch.setattr(projections, "StepEstimate",
                        functools.partial(progress.StepEstimate, over=0))
    done = invoke("optimize", "--model", SQUEEZE, "--weights", "none", "--layer", "features.0",
                  "--features", "0", "--steps", "3", "--image-size", "8", "--input-size", "32",
                  "--out", tmp_path / "g.png")
    assert done.returncode == 0, done.stderr
    assert "on this CPU (3 steps × 1 units); --steps fewer for a quicker look" in done.stderr
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    optimize = [line for line in readme.splitlines() if line.startswith("deconvviz optimize")]
    assert optimize and all("--steps" in line for line in optimize)
    with open(os.path.join(ROOT, "docs", "atlas.md"), encoding="utf-8") as handle:
        assert "a few units a second" not in handle.read()


def test_make_says_how_to_take_the_cpu_build_where_no_gpu_is_seen(tmp_path):
    import shutil

    tools = tmp_path / "bin"  # make and nothing else (no nvidia-smi)
    tools.mkdir()
    os.symlink(shutil.which("make"), tools / "make")

    def hint(*extra):
        env = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX", "MAKEFLAGS")}
        return subprocess.run(["make", "-s", "--no-print-directory", "torch-hint", *extra],
                              cwd=ROOT, env={**env, "PATH": str(tools)}, capture_output=True,
                              text=True, timeout=60).stdout

    said = hint()
    assert "make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu" in said
    assert "~700-MB" in said and said.count("\n") == 1
    assert hint("TORCH_INDEX=https://download.pytorch.org/whl/cpu") == ""
    (tools / "nvidia-smi").write_text("#!/bin/sh\n")
    (tools / "nvidia-smi").chmod(0o755)
    assert hint() == ""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert readme.index("TORCH_INDEX=https://download.pytorch.org/whl/cpu") < \
        readme.index("| step | time |")


def test_the_layers_table_fits_its_longest_path():
    done = invoke("layers", "--model", SQUEEZE, "--all")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = lines[:next(i for i, line in enumerate(lines) if line.startswith("Shapes are"))]
    assert max(len(line.split()[1]) for line in rows[1:]) > 30  # longer than the old column
    assert len({len(line) for line in rows}) == 1, rows  # every row as wide: aligned
    header = rows[0]
    for row in rows[1:]:  # each column starts where its header does
        assert row[header.index("path") - 1] == " " and row[header.index("shape") - 1] == " "


def test_the_sanity_figure_keeps_its_column_labels_inside():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    convs = collections.OrderedDict((f"denselayer{i}", nn.Conv2d(3 if i == 1 else 4, 4, 3))
                                    for i in range(1, 10))
    model = nn.Sequential(collections.OrderedDict(
        features=nn.Sequential(collections.OrderedDict(denseblock=nn.Sequential(convs))),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), classifier=nn.Linear(4, 3))).eval()
    result = dv.sanity_check(model, torch.rand(1, 3, 40, 40), methods=["gradient"], target=1)
    fig = result.figure()
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    labelled = [ax for ax in fig.axes if ax.get_title() and ax.images]
    assert len(labelled) == 10
    for ax in labelled:
        box = ax.title.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width, ax.get_title()
        tile = ax.get_window_extent(renderer)
        assert tile.x0 - 2 <= box.x0 and box.x1 <= tile.x1 + 2, ax.get_title()


def test_reverse_pass_titles_keep_their_capitals():
    projector = dv.Projector(tiny(), method="lrp")
    assert str(projector.reverse_pass("3")).startswith("LRP ε-z⁺-flat from '3'")
    assert str(dv.Projector(tiny()).reverse_pass("3")).startswith("Deconvnet from")


def test_a_tiny_photo_is_warned_about(tmp_path):
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    from deconvviz.data.images import SmallImageWarning

    with pytest.warns(SmallImageWarning, match="dot.png is 1x1 pixels"):
        dv.load_image(tmp_path / "dot.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallImageWarning)
        dv.load_image(CHELSEA)  # a photo of ordinary size: no warning
