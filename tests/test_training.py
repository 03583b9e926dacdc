"""Training (the paper's recipe) and what reads a run: its checkpoints as weights, resuming,
feature evolution and filter statistics; on a small synthetic image folder of coloured shapes
(conftest's ``shapes``). Training's options, torchrun and its errors: test_training_options."""
import csv
import os

import numpy as np
import pytest
import torch
from conftest import SMALL, invoke, scratch_folder
from PIL import Image

import deconvviz as dv
from deconvviz.training import TrainingInterrupted

RUN = dict(epochs=6, init="kaiming", dropout=0.2, save_at=[1, 2], **SMALL)


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    """Six epochs, with dropout (so the resume test covers its random masks). He et al.'s
    initialisation: from the paper's N(0, 1e-2) ZFNet sits at chance for many epochs."""
    with scratch_folder(tmp_path_factory.mktemp("runs")) as folder:
        yield dv.train("zfnet", shapes / "train", out=folder / "zf", val=shapes / "val", **RUN)


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


# Not an agreement test (scripts/kernel_matrix.sh): both runs take the same batches in one
# process, where PyTorch's CPU kernels are deterministic whatever kernels it picked.
def test_resume_after_an_interruption_equals_an_uninterrupted_run(run, shapes, scratch):
    # The fixture's settings, interrupted in epoch 1 and resumed, then stopped again just
    # after epoch 1 ended: its epoch 1 against the fixture's uninterrupted epoch 1.
    out = scratch / "zf"

    def stop_at(when):
        def stop(epoch, step, loss):
            if (epoch, step) == when:
                raise KeyboardInterrupt
        return stop

    with pytest.raises(TrainingInterrupted, match="--resume"):
        dv.train("zfnet", shapes / "train", out=out, val=shapes / "val", callback=stop_at((1, 2)),
                 **RUN)
    assert sorted(os.listdir(out)) == ["last.pt"]
    with pytest.raises(TrainingInterrupted, match="in epoch 2 after step 1 of 6"):
        dv.train("zfnet", shapes / "train", out=out, val=shapes / "val", resume=True,
                 callback=stop_at((2, 0)), **RUN)
    # Same machine, thread count and batches: PyTorch's CPU kernels are deterministic, so
    # the weights are bit-identical.
    a = torch.load(run.checkpoints[0], weights_only=True)["state_dict"]  # epoch_1.pt
    b = torch.load(out / "epoch_1.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = {"seconds", "images_per_s"}
    resumed = dv.read_metrics(out)
    assert len(resumed) == 1
    for x, y in zip(dv.read_metrics(run.run), resumed):
        assert {k: v for k, v in x.items() if k not in timing} == \
               {k: v for k, v in y.items() if k not in timing}


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
    result = dv.evolution("zfnet", checkpoints=run.run, images=shapes / "val", layers=["conv1", "conv5"], features="random:3")
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
    done = invoke("evolution", run.run, "--data", shapes / "val", "--layers", "conv1",
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


def test_evolution_refuses_a_checkpoint_of_another_model(run, shapes):
    with pytest.raises(dv.WeightsError, match="of model zfnet, not alexnet"):
        dv.evolution("alexnet", checkpoints=[run.checkpoints[0]], images=shapes / "val", layers=["conv1"])


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
    result = dv.evolution(None, checkpoints=[run.checkpoints[0], last], images=shapes / "val", layers=["conv1"],
                          features=[0], progress=False)
    assert result.projections["conv1"].shape[:2] == (1, 2)
