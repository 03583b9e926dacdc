"""Feature visualisation by optimisation (dv.feature_vis): it finds a hand-set template; a
trained plus-sign unit's image holds more of the plus than of the x, and more than a bare
plus; images beat the dataset's best; it leaves the model alone; it is deterministic;
batching does not change a unit's image."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_untouched, snapshot
from PIL import Image
from plus_or_x import EX, PLUS, RAW, SIZE, Small, corr, fit, placements
from torch import nn

import deconvviz as dv
from deconvviz.analyses.fv_image import LUCID_TRANSFORMS, draw_transforms, transform_batch
from deconvviz.analyses.fv_objective import gram_penalty as _gram_penalty
from deconvviz.analyses.fv_objective import saved_bytes as _saved_bytes
from deconvviz.data.zoo import Preprocessing


@pytest.fixture(scope="module")
def plus_model():
    """Trained to tell a plus from an x (60 steps of 32 images, about 2 s); with 256 test
    images and their labels."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Small()
    kind, x = fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), 60, g)
    with torch.no_grad():
        assert (model(x).argmax(1) == kind).float().mean() > 0.95  # it learnt the task
    return model, x, kind


def template_net(template):
    net = nn.Sequential(nn.Conv2d(3, 1, 7), nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight.copy_(template.expand(1, 3, 7, 7))
        net[0].bias.zero_()
    return net


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_a_template_detector_wants_its_template(param):
    # The unit is a conv filter set to a pattern; its best input, over its receptive field,
    # is that pattern (the optimum of a linear unit in a box is the sign of its weights).
    template = torch.where(PLUS + torch.eye(7) > 0, 1.0, -1.0)
    net = template_net(template - template.mean())
    before = snapshot(net)
    result = dv.feature_vis(net, "0", features=[0], objective="neuron", param=param,
                            decorrelate=param == "fourier", transforms=None, steps=48,
                            image_size=32, input_size=32, preprocessing=RAW)
    y, x = result.position
    grey = result.images[0, 0].mean(0)
    assert corr(grey[y:y + 7, x:x + 7], template) >= 0.9
    assert result.values[0, 0] > 0
    assert_untouched(net, before)


def test_the_negative_objective_wants_the_negative_template():
    template = torch.where(PLUS > 0, 1.0, -1.0)
    net = template_net(template - template.mean())
    result = dv.feature_vis(net, "0", features=[0], objective="neuron", negative=True, transforms=None,
                            steps=48, image_size=32, input_size=32, preprocessing=RAW)
    y, x = result.position
    assert corr(result.images[0, 0].mean(0)[y:y + 7, x:x + 7], template) <= -0.9
    assert result.values[0, 0] < 0  # the unit's own activation, minimised (issue 35)


def plus_unit(model, x, kind):
    """The conv2 feature whose strongest activation best tells a plus from an x."""
    with torch.no_grad():
        act = dv.Deconvnet(model).record(x, "conv2").activations["conv2"]
    top = act.flatten(2).amax(2)
    return int((top[kind == 1].mean(0) - top[kind == 0].mean(0)).argmax())


def test_the_plus_unit_wants_a_plus_and_more(plus_model):
    # Issue 30 asked for correlation >= 0.9 with the drawn plus over the receptive field (the
    # template test's measure). Not met, and no faithful optimiser can meet it on this model:
    # the unit's optimum is a plus with doubled and offset strokes and a dozen more bright
    # pixels, and it activates the unit ~20% more than a bare plus does. Measured over 12
    # restarts: 0.40 to 0.64 (a lone bar of the plus drawn alone scores 0.69); neither other
    # units, pixels, more steps, transforms, longer or cleaner training reach 0.9
    # (scripts/feature_vis_plus_study.py, docs/feature_vis.md). What is asserted instead: the
    # image is more plus than x, has all four arms of the plus, and beats a bare plus.
    model, x, kind = plus_model
    unit = plus_unit(model, x, kind)
    result = dv.feature_vis(model, "conv2", features=[unit], objective="neuron", transforms=None,
                            images_per_unit=4, steps=64, image_size=SIZE, input_size=SIZE,
                            preprocessing=RAW)
    y, x0 = result.position
    # conv2's (y, x) sees input rows 2y-3 .. 2y+4 (8 px): the 7-px shape fits at 4 offsets
    rows, cols = slice(2 * y - 3, 2 * y + 5), slice(2 * x0 - 3, 2 * x0 + 5)
    placed = placements(PLUS)
    centres = [(3 + dy, 3 + dx) for dy in (0, 1) for dx in (0, 1)]
    d = torch.arange(1, 4)

    def arms(window, cy, cx):
        """Each arm's brightness (its 3 px beside the centre), at its place or a pixel to
        either side (the first max-pool's tolerance); a missing arm scores about 0."""
        return [max(float(window[cy + ay * d + s * abs(ax), cx + ax * d + s * abs(ay)].mean())
                    for s in (-1, 0, 1)) for ay, ax in ((-1, 0), (1, 0), (0, -1), (0, 1))]

    for window in result.images[0, :, :, rows, cols].mean(1):
        # each of four random starts draws more of the plus than of the x (measured: 0.40 to
        # 0.62 against 0.14 to 0.18; the x drawn alone scores 0.03 against the plus) ...
        plus = [corr(window, p) for p in placed]
        ex = max(corr(window, p) for p in placements(EX))
        assert max(plus) >= 0.35 and ex <= 0.3 and max(plus) - ex >= 0.2
        # ... its centre and all four arms (measured: 0.77 and more; a bar, an L or a T drawn
        # alone lacks an arm: 0.0; the x: 0.33 at most)
        cy, cx = centres[plus.index(max(plus))]
        assert window[cy, cx] >= 0.6 and min(arms(window, cy, cx)) >= 0.6
    # ... and wants more than the plus: every optimum beats a white plus on black at the
    # place the unit likes best (measured: 5.7 to 6.0 against 4.9), so the 0.9 is out of reach
    bare = torch.zeros(4, 3, SIZE, SIZE)
    bare[:, :, rows, cols] = torch.stack(placed)[:, None]
    with torch.no_grad():
        plain = dv.Deconvnet(model).record(bare, "conv2").activations["conv2"][:, unit, y, x0]
    assert result.values[0].min() >= 1.1 * plain.max()


def test_the_optimised_image_beats_the_datasets_best(plus_model, tmp_path):
    # For >= 95% of conv2's units, the activation at the centre of the optimised image is
    # above the unit's strongest activation anywhere in 256 images (dv.scan's top hit).
    # Without random transforms (measured: 32 of 32; with Lucid's on a 40-px canvas, 0).
    model, x, _ = plus_model
    folder = tmp_path / "plus_or_x"
    folder.mkdir()
    for i, image in enumerate(x):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(
            folder / f"{i:03d}.png")
    scan = dv.scan(model, str(folder), layers=["conv2"], hits=1, batch_size=64, progress=False,
                   preprocessing=RAW)
    best = torch.tensor([scan.top("conv2", f)[0].value if scan.top("conv2", f) else 0.0
                         for f in range(32)])
    result = dv.feature_vis(model, "conv2", objective="neuron", transforms=None, steps=64,
                            image_size=SIZE, input_size=SIZE, preprocessing=RAW)
    assert result.units == list(range(32))
    beats = result.values[:, 0] > best
    assert beats.float().mean() >= 0.95, (result.values[:, 0], best)


def test_nothing_stays_attached_after_success_and_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)).eval()
    before = snapshot(net)
    dv.feature_vis(net, "2", features=[0, 4], steps=2, image_size=16, input_size=16)
    assert_untouched(net, before)
    with pytest.raises(dv.ArgumentError, match="out of range .* 0 to 4"):
        dv.feature_vis(net, "2", features=[5], steps=2, image_size=16, input_size=16)
    calls = []

    def boom(done, total, label):
        calls.append(done)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        dv.feature_vis(net, "2", features=[1], steps=3, image_size=16, input_size=16, progress=boom)
    assert calls
    assert_untouched(net, before)
    net.train()
    net.append(nn.Dropout())
    with pytest.raises(dv.ArgumentError, match="training mode"):
        dv.feature_vis(net, "2", features=[1], steps=1, image_size=16, input_size=16)


def test_same_seed_same_images_and_batching_changes_nothing_but_rounding():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                        nn.ReLU()).eval()
    kwargs = dict(steps=8, image_size=24, input_size=28)
    one = dv.feature_vis(net, "4", features=[1, 3, 5], **kwargs)
    again = dv.feature_vis(net, "4", features=[1, 3, 5], **kwargs)
    # same process, threads and device: PyTorch's CPU kernels are deterministic
    assert torch.equal(one.images, again.images)
    other = dv.feature_vis(net, "4", features=[1, 3, 5], seed=1, **kwargs)
    assert not torch.allclose(one.images, other.images, atol=1e-3)
    # a unit alone, or chunked one image at a time: its own stream, so the same image up to
    # batched kernels' rounding (stated: 1e-4 absolute on [0, 1]; a different unit is far)
    alone = dv.feature_vis(net, "4", features=[3], **kwargs)
    chunked = dv.feature_vis(net, "4", features=[1, 3, 5], max_memory=1, **kwargs)
    assert (alone.images[0] - one.images[1]).abs().max() <= 1e-4
    assert (chunked.images - one.images).abs().max() <= 1e-4
    assert (one.images[0] - one.images[1]).abs().max() > 1e-2


def test_a_relus_output_is_optimised_before_the_relu():
    # a unit dead at the grey start: after its ReLU it has no gradient and never moves
    net = nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight.fill_(0.5)
        net[0].bias.fill_(-5.0)  # about -2.3 on the grey start, up to +30 within reach
    kwargs = dict(steps=16, image_size=16, input_size=16, transforms=None)
    before = dv.feature_vis(net, "1", features=[0], **kwargs)
    assert before.pre_relu and "(before its ReLU)" in before.settings()
    assert before.values[0, 0] > 0  # the pre-activation, driven above zero
    stuck = dv.feature_vis(net, "1", features=[0], pre_relu=False, **kwargs)
    assert not stuck.pre_relu and stuck.values[0, 0] == 0
    start = dv.feature_vis(net, "1", features=[0], pre_relu=False, **dict(kwargs, steps=1))
    assert torch.equal(stuck.images, start.images)  # no gradient: Adam never moved it


def test_the_memory_budget_counts_activations_not_weights():
    # 3 MB of weights, 16 KB of activations per image: chunks are sized by the latter
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1024)).eval()
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    saved = _saved_bytes(lambda: net(x), net)
    assert 0 < saved <= 64 * 1024


def test_transforms_are_lucids_and_seeded():
    draws = draw_transforms([0, 1], 500, LUCID_TRANSFORMS, seed=0)
    assert torch.equal(draws, draw_transforms([0, 1], 500, LUCID_TRANSFORMS, seed=0))
    assert draws[:, :, [0, 1]].abs().max() == 4 and draws[:, :, [4, 5]].abs().max() == 2
    assert torch.isclose(draws[:, :, 2].min(), torch.tensor(0.9, dtype=torch.float64))
    assert draws[:, :, 3].abs().max() == 10
    assert not torch.equal(draws[:, 0], draws[:, 1])  # each image its own stream
    # no shift, scale or rotation: the image on a grey border 6 px wide at each side
    image = torch.rand(1, 3, 20, 20)
    still = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    out = transform_batch(image, 32, LUCID_TRANSFORMS, still)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[..., 6:26, 6:26], image, atol=1e-5)
    assert torch.allclose(out[..., :5, :], torch.full_like(out[..., :5, :], 0.5))


def test_objectives_direction_logit_and_diversity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    kwargs = dict(steps=4, image_size=16, input_size=16, transforms=None)
    # a direction along one channel is that channel's objective (direction 0 starts from
    # unit 0's seeded image)
    d = dv.feature_vis(net, "1", objective="direction", directions=torch.eye(4)[[0]], **kwargs)
    c = dv.feature_vis(net, "1", features=[0], **kwargs)
    assert torch.allclose(d.images, c.images, atol=1e-5) and d.labels == ["direction 0"]
    logit = dv.feature_vis(net, None, features=[1, 2], objective="logit", **kwargs)
    with torch.no_grad():
        x = Preprocessing().normalise(F.interpolate(logit.images[:, 0], 16))  # ImageNet's
        assert torch.allclose(net(x)[[0, 1], [1, 2]], logit.values[:, 0], rtol=1e-4)
    with pytest.raises(dv.ArgumentError, match="choose from channel, neuron"):
        dv.feature_vis(net, "1", objective="mean", **kwargs)
    # the Gram penalty: identical maps score 1 per pair; diversity pushes a unit's images apart
    act = torch.rand(1, 4, 5, 5).expand(3, -1, -1, -1)
    assert torch.isclose(_gram_penalty(act, 3), torch.tensor(2.0))
    plain = dv.feature_vis(net, "1", features=[0], images_per_unit=2, **kwargs)
    diverse = dv.feature_vis(net, "1", features=[0], images_per_unit=2, diversity=100.0, **kwargs)
    gap = (lambda r: (r.images[0, 0] - r.images[0, 1]).abs().mean())
    assert gap(diverse) > gap(plain)


def test_the_result_draws_and_saves(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    result = dv.feature_vis(net, "1", features=[0, 3], steps=2, image_size=16, input_size=16)
    assert "2 steps" in result.settings() and "fourier, decorrelated colour" in result.settings()
    assert "the model's own weights" in result.settings()
    fig = result.figure()
    assert result.settings().split(":")[0] in fig._suptitle.get_text().replace("\n", " ")
    assert os.path.exists(result.save(tmp_path / "grid.png"))
    data = np.load(result.save(tmp_path / "grid.npz"))
    assert data["images"].shape == (2, 1, 3, 16, 16) and list(data["units"]) == [0, 3]
    with pytest.raises(dv.OutputError):
        result.save(tmp_path / "grid.csv")


def test_the_explorer_shows_what_a_unit_wants():
    pytest.importorskip("ipywidgets")
    from deconvviz.explorer import explore, png_bytes

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU()).eval()
    before = snapshot(net)
    x = torch.randn(1, 3, 32, 32)
    options = dict(steps=2, image_size=16, input_size=32)
    explorer = explore(net, x, feature_vis=options)
    explorer.layer_picker.value = "3"
    explorer.feature_picker.value = 5 if explorer.feature_picker.value != 5 else 4
    feature = explorer.feature_picker.value
    expected = dv.feature_vis(net, "3", features=[feature], **options)
    assert explorer.wanted_view.value == png_bytes(expected.image(feature), 224)
    assert "2 steps" in explorer.wanted_label.value
    # a result computed beforehand: its units are shown, others say they are not in it
    given = dv.feature_vis(net, "3", features=[feature], **options)
    shown = explore(net, x, feature_vis=given)
    shown.layer_picker.value = "3"
    shown.feature_picker.value = feature
    assert shown.wanted_view.value == png_bytes(given.image(feature), 224)
    shown.feature_picker.value = (feature + 1) % 6
    assert "not in the result" in shown.wanted_label.value
    assert_untouched(net, before)


def test_atlas_feature_vis_end_to_end_on_the_bundled_photos(tmp_path):
    # SqueezeNet 1.1's first ReLU (64 units): the cheapest torchvision CNN with zoo handling
    from conftest import EXAMPLES, invoke

    photos = sorted(os.path.join(EXAMPLES, n) for n in os.listdir(EXAMPLES)
                    if n.endswith((".png", ".jpg")))
    model = dv.load_model("torchvision:squeezenet1_1", weights=None)
    dv.scan(model, photos, layers=["features.1"], hits=1, progress=False).save(tmp_path / "s.pt")
    out = tmp_path / "site"
    done = invoke("atlas", tmp_path / "s.pt", "--out", out, "--feature-vis",
                  "--feature-vis-steps", "1")
    assert done.returncode == 0, done.stderr
    assert "optimised images" in done.stderr
    slug = [p for p in os.listdir(out) if (out / p).is_dir()][0]
    page = (out / slug / "7.html").read_text()
    # the three views: the optimised image, then the hits (projection beside patch)
    assert page.index('src="img/u7_fv.png"') < page.index('src="img/u7_r0.jpg"')
    assert "What it wants" in page and "1 steps Adam 0.05" in page
    assert "untrained weights" in page and "fourier, decorrelated colour" in page
    tile = cv2_read(out / slug / "img" / "u7_fv.png")
    assert tile.shape == (128, 128, 3) and tile.std() > 0
    assert len([f for f in os.listdir(out / slug / "img") if f.endswith("_fv.png")]) == 64


def cv2_read(path):
    import cv2

    return cv2.imread(str(path))


def test_the_optimize_command(tmp_path):
    from conftest import invoke

    out = tmp_path / "grid.png"
    done = invoke("optimize", "--model", "torchvision:squeezenet1_1", "--weights", "none",
                  "--layer", "features.1", "--features", "0-3,9", "--steps", "2",
                  "--image-size", "16", "--input-size", "32", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.exists()
    data = tmp_path / "grid.npz"
    assert invoke("optimize", "--model", "torchvision:squeezenet1_1", "--weights", "none",
                  "--layer", "features.1", "--features", "9", "--steps", "1", "--param",
                  "pixel", "--no-transforms", "--image-size", "16", "--input-size", "32",
                  "--out", data).returncode == 0
    assert list(np.load(data)["units"]) == [9]
    for args, message in [
            (["--layer", "features.1", "--features", "3-1"], "bad feature list '3-1'"),
            (["--features", "0"], "give --layer"),
            (["--layer", "features.1", "--objective", "logit"], "leave out --layer"),
            (["--layer", "features.1", "--out", tmp_path / "g.txt"], "unsupported output"),
            (["--layer", "features.1", "--features", "64"], "out of range")]:
        bad = invoke("optimize", "--model", "torchvision:squeezenet1_1", "--weights", "none",
                     "--steps", "1", "--image-size", "16", "--input-size", "32", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert bad.stderr.count("\n") == 1  # one error: line, no traceback
