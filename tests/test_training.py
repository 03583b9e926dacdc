"""Training (the paper's recipe), resuming, torchrun, feature evolution and filter statistics,
on a small synthetic image folder of coloured shapes generated here."""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import invoke
from PIL import Image

import deconvviz as dv
from deconvviz.analyses.filters import filter_stats
from deconvviz.analyses.training import TrainingInterrupted, renormalise_filters
from deconvviz.data.synthetic import make_shapes

# ZFNet on 56-pixel crops of 64-pixel shapes: small enough for a CPU, big enough for conv5.
SMALL = dict(batch_size=8, resize_size=64, crop_size=56, workers=0, progress=False)
RUN = dict(epochs=6, init="kaiming", dropout=0.2, save_at=[1, 2], **SMALL)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root / "train", per_class=16, size=64, seed=0)  # 48 images, 6 batches
    make_shapes(root / "val", per_class=4, size=64, seed=1)
    return root


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    """Six epochs, with dropout (so the resume test covers its random masks). He et al.'s
    initialisation: from the paper's N(0, 1e-2) ZFNet sits at chance for many epochs."""
    out = tmp_path_factory.mktemp("runs") / "zf"
    result = dv.train("zfnet", shapes / "train", out, val=shapes / "val", **RUN)
    return result


def test_loss_falls_and_the_requested_checkpoints_load(run, shapes):
    names = [os.path.basename(p) for p in run.checkpoints]
    assert names == ["epoch_1.pt", "epoch_2.pt", "epoch_6.pt"]  # save_at, and the last
    losses = [m["train_loss"] for m in run.metrics]
    assert [int(m["epoch"]) for m in run.metrics] == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < losses[0] - 0.1, losses  # ln 3 = 1.10 is chance on three classes
    with open(os.path.join(run.run, "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and float(rows[0]["train_loss"]) == pytest.approx(losses[0], 1e-5)
    assert {"val_top1_error", "val_top5_error", "images_per_s"} <= set(rows[0])
    assert dv.read_metrics(run.run)[-1]["epoch"] == 6
    curves = run.figure()  # loss and top-1 error, train and validation
    assert [len(ax.lines) for ax in curves.axes] == [2, 2]
    assert list(curves.axes[0].lines[0].get_ydata()) == pytest.approx(losses)
    for path in run.checkpoints:
        model = dv.load_model("zfnet", weights=path)
        info = dv.model_info(model)
        assert info.classes == ("circle", "square", "triangle") and info.trained
        assert info.preprocessing.crop_size == 56 and model.classifier.fc8.out_features == 3
    # the checkpoint works with every command's --weights
    image = next((shapes / "val" / "circle").iterdir())
    out = shapes / "conv1.png"
    done = invoke("show", "--model", "zfnet", "--weights", run.checkpoints[-1], "--layer",
                  "conv1", "--top", "4", "--out", out, image)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).width > 100


def test_training_leaves_the_callers_random_state_alone(shapes, tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    dv.train("zfnet", shapes / "train", tmp_path / "r", epochs=1, save_at=[], **SMALL)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.agreement
def test_resume_after_an_interruption_equals_an_uninterrupted_run(shapes, tmp_path):
    # The run's settings over two epochs, interrupted in epoch 2 and resumed, against the
    # same two epochs uninterrupted.
    out = tmp_path / "zf"

    def stop(epoch, step, loss):
        if (epoch, step) == (2, 2):
            raise KeyboardInterrupt

    two_epochs = {**RUN, "epochs": 2}
    with pytest.raises(TrainingInterrupted, match="--resume"):
        dv.train("zfnet", shapes / "train", out, val=shapes / "val", callback=stop,
                 **two_epochs)
    assert sorted(os.listdir(out)) == ["epoch_1.pt", "last.pt", "metrics.csv"]
    resumed = dv.train("zfnet", shapes / "train", out, val=shapes / "val", resume=True,
                       **two_epochs)
    run = dv.train("zfnet", shapes / "train", tmp_path / "straight", val=shapes / "val",
                   **two_epochs)
    # Same machine, thread count and batches: PyTorch's CPU kernels are deterministic, so
    # the weights are bit-identical.
    a = torch.load(run.checkpoints[-1], weights_only=True)["state_dict"]  # epoch_2.pt
    b = torch.load(resumed.checkpoints[-1], weights_only=True)["state_dict"]
    assert os.path.basename(resumed.checkpoints[-1]) == "epoch_2.pt"
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = {"seconds", "images_per_s"}
    assert len(resumed.metrics) == 2
    for x, y in zip(run.metrics, resumed.metrics):
        assert {k: v for k, v in x.items() if k not in timing} == \
               {k: v for k, v in y.items() if k not in timing}


def test_filters_are_renormalised_to_rms_0_1_and_grow_without_it(shapes, tmp_path):
    # A learning rate high enough that the first-layer filters blow up (the paper's Fig.
    # 6(a) problem, in six steps instead of an epoch of ImageNet).
    rms = {}
    for clip in (0.0, 0.1):
        result = dv.train("zfnet", shapes / "train", tmp_path / f"clip{clip}", epochs=1,
                          lr=0.2, dropout=0.0, init="kaiming", clip_rms=clip, save_at=[],
                          **SMALL)
        model = dv.load_model("zfnet", weights=result.checkpoints[-1])
        rms[clip] = torch.cat([filter_stats(m.weight)["rms"] for m in model.modules()
                               if isinstance(m, torch.nn.Conv2d)])
    assert torch.isfinite(rms[0.1]).all() and (rms[0.1] <= 0.1 * (1 + 1e-6)).all()
    assert (~(rms[0.0] <= 0.1)).any()  # some filter exceeds 0.1 (or overflowed)


def test_renormalisation_by_hand():
    conv = torch.nn.Conv2d(1, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.3, 0.3], [0.3, 0.3]]],   # RMS 0.3 -> 0.1
                                        [[[0.05, -0.05], [0.05, -0.05]]],  # RMS 0.05: kept
                                        [[[0.0, 0.0], [0.0, 0.0]]]]))   # zero: kept
    renormalise_filters(torch.nn.Sequential(conv), 0.1)
    expected = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.05, -0.05, 0.05, -0.05, 0, 0, 0, 0])
    assert torch.allclose(conv.weight.flatten(), expected, atol=1e-7)


def test_filter_statistics_on_a_constructed_bank():
    k = 8
    y, x = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    constant = torch.full((3, k, k), 0.2)
    checker = ((-1.0) ** (y + x)).expand(3, k, k) * 0.2  # all energy at (1/2, 1/2)
    slow = torch.cos(2 * math.pi * x / k).expand(3, k, k).clone()  # 1/8 cycle/pixel: low
    fast = torch.cos(2 * math.pi * 3 * x / k).expand(3, k, k).clone()  # 3/8: high
    tiny = torch.full((3, k, k), 1e-4)
    bank = torch.stack([constant, checker, slow, fast, tiny])
    stats = filter_stats(bank)
    # RMS by hand: 0.2, 0.2, 1/sqrt(2) for the two cosines, 1e-4
    assert torch.allclose(stats["rms"], torch.tensor([0.2, 0.2, 0.5 ** 0.5, 0.5 ** 0.5, 1e-4]),
                          rtol=1e-5)
    assert torch.allclose(stats["high_freq"], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]),
                          atol=1e-6)
    # median RMS 0.2: only the 1e-4 filter is below a tenth of it
    assert stats["dead"].tolist() == [False, False, False, False, True]
    # an odd-sized checkerboard is not a pure frequency, but nearly all of it is high
    odd = filter_stats(((-1.0) ** (torch.arange(7).reshape(-1, 1) + torch.arange(7)))
                       .expand(1, 3, 7, 7))
    assert odd["high_freq"].item() > 0.9


def test_filters_figure_and_csv(run, tmp_path):
    models = [dv.load_model("zfnet", weights=p) for p in run.checkpoints]
    result = dv.filters(models)
    assert result.layers == ["features.conv1"] * 3 and result.weights[0].shape == (96, 3, 7, 7)
    assert len(result.summary()) == 3 and "epoch_6.pt" in result.labels[-1]
    # the alias conv1 names ZFNet's ReLU; the filters are those of the conv feeding it
    assert dv.filters(models[0], "conv1").layers == ["features.conv1"]
    out = invoke("filters", "--model", "zfnet", "--weights", run.checkpoints[0], "--weights",
                 run.checkpoints[-1], "--out", tmp_path / "f.png", "--csv", tmp_path / "f.csv")
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "f.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 96
    w = models[0].features.conv1.weight.detach()
    assert float(rows[5]["rms"]) == pytest.approx(float(w[5].pow(2).mean().sqrt()), rel=1e-5)
    diverged = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        diverged.weight[1] = float("nan")
    assert "1 with non-finite weights" in dv.filters(diverged).summary()[0]
    assert Image.open(tmp_path / "f.png").width > 500
    result.save(tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


def test_evolution_shapes_and_figure(run, shapes, tmp_path):
    result = dv.evolution("zfnet", run.run, shapes / "val", ["conv1", "conv5"], "random:3")
    assert result.labels == ["epoch 1", "epoch 2", "epoch 6"]
    assert result.features["conv1"] == sorted(result.features["conv1"])
    assert len(result.features["conv1"]) == 3
    # conv1's field is 7 px; conv5's is larger than the 56-px crop
    layers = {l.alias: l for l in dv.list_layers(dv.load_model("zfnet", weights=None),
                                                 input_size=56)}
    for name in ("conv1", "conv5"):
        size = layers[name].rf_size
        assert result.projections[name].shape == (3, 3, 3, size, size)
        assert result.patches[name].shape == (3, 3, size, size, 3)
        assert len(result.hits[name]) == 3 and len(result.hits[name][0]) == 3
    # each column is that checkpoint's own scan: its strongest conv1 hit, projected again,
    # is not all zeros
    assert np.abs(result.projections["conv1"]).reshape(9, -1).max(axis=1).min() > 0
    done = invoke("evolution", run.run, "--data", shapes / "val", "--layers", "conv1,conv3",
                  "--features", "random:2", "--out", tmp_path / "f4.pdf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "f4.pdf").read_bytes()[:4] == b"%PDF"
    result.figure().savefig(tmp_path / "f4.png", dpi=100)
    with Image.open(tmp_path / "f4.png") as image:
        # the paper's layout: the layers' blocks side by side, compact enough for a page
        # (it was once 900x3125 px, three far-apart columns stacked layer under layer)
        assert 100 < image.height < image.width <= 800
    saved = np.load(result.save(tmp_path / "f4.npz"))
    assert np.array_equal(saved["conv5_projections"], result.projections["conv5"])
    assert list(saved["conv1_features"]) == result.features["conv1"]


@pytest.mark.parametrize("case", ["empty", "one class", "other model", "existing run",
                                  "different resume", "small crop", "out is a file",
                                  "nothing to resume"])
def test_bad_training_inputs_get_one_line_errors(case, run, shapes, tmp_path):
    data = shapes / "train"
    args = ["train", "--model", "zfnet", "--out", tmp_path / "r", "--epochs", "1",
            "--batch-size", "8", "--resize", "64", "--crop", "56", "--workers", "0"]
    if case == "empty":
        (tmp_path / "empty").mkdir()
        done, expected = invoke(*args, tmp_path / "empty"), "holds no images"
    elif case == "one class":
        (tmp_path / "one" / "a").mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "one" / "a" / "x.png")
        done, expected = invoke(*args, tmp_path / "one"), "at least two classes"
    elif case == "other model":
        done = invoke("show", "--model", "alexnet", "--weights", run.checkpoints[0],
                      "--layer", "conv1", "--out", tmp_path / "x.png",
                      next((shapes / "val" / "circle").iterdir()))
        expected = "is of model zfnet, not alexnet"
    elif case == "existing run":
        done, expected = invoke(*args[:3], "--out", run.run, *args[5:], data), "already holds"
    elif case == "different resume":
        done = invoke(*args[:3], "--out", run.run, *args[5:], "--lr", "0.5", "--resume", data)
        expected = "is from a different run ("
    elif case == "small crop":
        done = invoke(*args[:-6], "--resize", "64", "--crop", "32", "--workers", "0", data)
        expected = "cannot take 32x32 crops"
    elif case == "out is a file":
        (tmp_path / "r").write_text("x")
        done, expected = invoke(*args, data), "is a file"
    else:
        done, expected = invoke(*args, "--resume", data), "nothing to resume"
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Error:" not in lines[0].split("error: ", 1)[1][:30]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_unreadable_image_stops_training_with_its_name(shapes, tmp_path, workers):
    data = tmp_path / "data"
    make_shapes(data, per_class=8, size=64, seed=0)
    (data / "circle" / "003.png").write_bytes(b"not a png")
    done = invoke("train", "--model", "zfnet", "--out", tmp_path / "r", "--epochs", "1",
                  "--batch-size", "8", "--resize", "64", "--crop", "56", "--workers",
                  workers, data)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "003.png" in lines[-1], lines


def test_evolution_refuses_a_checkpoint_of_another_model(run, shapes):
    with pytest.raises(dv.WeightsError, match="of model zfnet, not alexnet"):
        dv.evolution("alexnet", [run.checkpoints[0]], shapes / "val", ["conv1"])


@pytest.mark.agreement
def test_two_process_torchrun_matches_one_process(tmp_path):
    """Dropout off and the same global batch: two gloo processes, each on half of every
    batch, average their gradients; one process sums the same terms in another order, and
    three SGD steps amplify that rounding. Each tensor agrees to 1e-2 of its norm (relative
    L2; seen: up to 1.9e-3 for conv1's bias, whose values are small three steps from zero and
    whose gradient sums cancel, ~1e-5 for the weights). A real difference is far larger:
    the same run with a learning rate 10% higher is checked to be outside."""
    shapes = tmp_path / "shapes"
    make_shapes(shapes / "train", per_class=8, size=64, seed=0)  # 24 images, 3 steps
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", "-m", "deconvviz", "train", "--model", "zfnet",
                          "--epochs", "1", "--batch-size", "8", "--resize", "64", "--crop", "56",
                          "--workers", "0", "--dropout", "0", "--init", "kaiming", "--save-at",
                          "1", "--out", str(tmp_path / "two"), str(shapes / "train")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert two.stdout.strip().splitlines() == [str(tmp_path / "two" / "epoch_1.pt")]
    dv.train("zfnet", shapes / "train", tmp_path / "one", epochs=1, dropout=0.0,
             init="kaiming", save_at=[1], **SMALL)
    a = torch.load(tmp_path / "one" / "epoch_1.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "epoch_1.pt", weights_only=True)["state_dict"]

    def relative(x, y):
        return float((x - y).norm() / y.norm().clamp_min(1e-30))

    errors = {key: relative(b[key], a[key]) for key in a if a[key].is_floating_point()}
    assert max(errors.values()) <= 1e-2, max(errors.items(), key=lambda kv: kv[1])
    # The tolerance separates rounding from a real difference: the same run with a learning
    # rate 10% higher is outside it.
    dv.train("zfnet", shapes / "train", tmp_path / "lr", epochs=1, dropout=0.0, lr=0.011,
             init="kaiming", save_at=[1], **SMALL)
    c = torch.load(tmp_path / "lr" / "epoch_1.pt", weights_only=True)["state_dict"]
    assert max(relative(c[key], a[key]) for key in errors) > 1e-2
    assert dv.load_model("zfnet", weights=tmp_path / "two" / "epoch_1.pt") is not None


def test_an_interrupted_command_says_how_to_resume(shapes, tmp_path, monkeypatch):
    import deconvviz.analyses

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("interrupted in epoch 2 after step 3 of 6; run again with "
                                  "--resume to continue")

    monkeypatch.setattr(deconvviz.analyses, "train", interrupted)
    done = invoke("train", "--model", "zfnet", "--out", tmp_path / "r", shapes / "train")
    assert done.returncode == 130  # the shell's code for Ctrl-C
    assert done.stderr.strip().splitlines() == [
        "error: interrupted in epoch 2 after step 3 of 6; run again with --resume to continue"]


def test_every_file_a_run_writes_loads_as_weights(run, shapes, tmp_path):
    # last.pt (the full training state) once failed with "wrong shapes fc8", and evolution
    # called it "not written by deconvviz train".
    last = os.path.join(run.run, "last.pt")
    model = dv.load_model("zfnet", weights=last)
    final = dv.load_model("zfnet", weights=run.checkpoints[-1])
    assert dv.weights_digest(model) == dv.weights_digest(final)  # last.pt is epoch 6's
    info = dv.model_info(model)
    assert info.classes == ("circle", "square", "triangle")
    assert info.preprocessing.crop_size == 56
    photo = next((shapes / "val" / "circle").iterdir())
    done = invoke("show", "--model", "zfnet", "--weights", last, "--layer", "conv1",
                  "--out", tmp_path / "x.png", photo)
    assert done.returncode == 0, done.stderr
    result = dv.evolution(None, [run.checkpoints[0], last], shapes / "val", ["conv1"],
                          [0], progress=False)
    assert result.projections["conv1"].shape[:2] == (1, 2)


def test_the_run_folders_parents_are_made_and_workers_fit_the_cores(shapes, tmp_path,
                                                                    monkeypatch):
    # `train --out runs/zf` once failed until runs/ existed; --workers defaulted to 4 on a
    # 2-core machine, and PyTorch warned about it; other libraries' warnings reached users.
    import warnings

    import deconvviz.analyses

    seen = {}

    def fake_train(model, data, out, **kwargs):
        seen.update(kwargs, out=out)
        warnings.warn("some library's deprecation", FutureWarning, stacklevel=2)
        return dv.TrainResult(run=str(out), checkpoints=[], metrics=[])

    monkeypatch.setattr(deconvviz.analyses, "train", fake_train)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    done = invoke("train", "--model", "zfnet", "--out", tmp_path / "runs" / "zf",
                  shapes / "train")
    assert done.returncode == 0, done.stderr
    assert seen["workers"] == 2 and "warning" not in done.stderr
    result = dv.train("zfnet", shapes / "train", tmp_path / "new" / "runs" / "zf", epochs=1,
                      save_at=[], **{**SMALL, "batch_size": 16})
    assert os.path.isfile(os.path.join(result.run, "last.pt"))
