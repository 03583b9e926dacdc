import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, captured_outputs, invoke
from PIL import Image

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses import dataset_scan as scan_module
from deconvviz.analyses.dataset_scan import ScanInterrupted, scan
from deconvviz.analyses.scan_result import ScanResult, load_scan, same_hits
from deconvviz.analyses.top_hits import project_hits

LAYERS = ["conv1", "conv3", "fc6"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six real photos plus their crops, a text file, a truncated JPEG, in nested folders."""
    root = tmp_path_factory.mktemp("photos")
    (root / "crops").mkdir()
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith((".png", ".jpg")):
            shutil.copy(os.path.join(EXAMPLES, name), root / name)
            with Image.open(os.path.join(EXAMPLES, name)) as img:
                w, h = img.size
                img.convert("RGB").crop((0, 0, w // 2, h // 2)).save(root / "crops" / f"{name}.png")
    (root / "notes.txt").write_text("not an image")
    data = open(os.path.join(EXAMPLES, "rocket.jpg"), "rb").read()
    (root / "crops" / "cut.jpg").write_bytes(data[: len(data) // 4])
    return root


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


@pytest.fixture(scope="module")
def reference(photos, model):
    """The scan the agreement tests compare against: batches of 4, no workers."""
    return scan(model, str(photos), LAYERS, top=3, batch_size=4, progress=False)


def brute_force(model, result, k):
    """``result`` recomputed by brute force: one plain forward of every readable image at
    once, read with a hook, and each feature's top-k sorted in plain Python."""
    xs, kept = [], []
    for i, p in enumerate(result.images):
        try:
            xs.append(dv.load_image(p, model)[0])
            kept.append(i)
        except dv.ImageError:
            pass
    aliases = dv.Deconvnet(model).aliases
    tops = {}
    for layer in result.layer_names:
        with captured_outputs(model.get_submodule(aliases[layer]), detach=True) as captured, \
                torch.no_grad():
            model(torch.cat(xs))
        flat = captured[0].reshape(len(kept), captured[0].shape[1], -1)
        width = captured[0].shape[-1] if captured[0].dim() == 4 else 1
        channels = flat.shape[1]
        t = {"values": torch.full((channels, k), float("-inf")),
             "images": torch.full((channels, k), -1, dtype=torch.long),
             "ys": torch.zeros((channels, k), dtype=torch.long),
             "xs": torch.zeros((channels, k), dtype=torch.long),
             "runner_ups": torch.full((channels, k), float("-inf"))}
        for f in range(channels):
            rows = []
            for j, image in enumerate(kept):
                ordered = flat[j, f].tolist()
                best = max(range(len(ordered)), key=lambda q: (ordered[q], -q))  # first max
                if ordered[best] > 0:  # a hit is a positive activation
                    second = max([v for q, v in enumerate(ordered) if q != best],
                                 default=float("-inf"))
                    rows.append((-ordered[best], image, best, second))
            for rank, (v, image, best, second) in enumerate(sorted(rows)[:k]):
                t["values"][f, rank], t["images"][f, rank] = -v, image
                t["ys"][f, rank], t["xs"][f, rank] = best // width, best % width
                t["runner_ups"][f, rank] = second
        tops[layer] = t
    return ScanResult({**result.data, "tops": tops})


@pytest.mark.agreement
def test_top_k_equals_brute_force(photos, model, reference):
    # The brute force runs every image in one batch, the scan in batches of 4: the same hits
    # and values to VALUE_RTOL of each layer's strongest hit, near-ties aside (same_hits).
    paths = scan_module.list_images(str(photos))
    assert reference.images == paths
    expected = brute_force(model, reference, 3)
    assert same_hits(expected, reference) == []
    def where(hits):
        return [(h.image, h.y, h.x) for h in hits]

    same = sum(where(reference.top(l, f)) == where(expected.top(l, f)) for l in LAYERS
               for f in range(reference.features(l)))
    assert same >= 0.99 * sum(reference.features(l) for l in LAYERS)  # near-ties are rare
    assert len({h.image for h in reference.top("conv3", 0)}) == 3  # one hit per image


def test_unreadable_files_are_skipped_and_reported(photos, model):
    result = scan(model, str(photos), ["conv1"], top=2, progress=False)
    skipped = dict(result.skipped)
    assert set(skipped) == {str(photos / "notes.txt"), str(photos / "crops" / "cut.jpg")}
    assert "not an image" in skipped[str(photos / "notes.txt")]
    assert all(h.image not in skipped for f in range(96) for h in result.top("conv1", f))


@pytest.mark.agreement
@pytest.mark.parametrize("batch_size,workers", [(1, 0), (5, 0), (3, 2)])
def test_results_do_not_depend_on_batch_size_or_workers(photos, model, reference, batch_size,
                                                        workers):
    # What is guaranteed across batch sizes (PyTorch's convolutions and matrix products may
    # differ in the last bits): values to VALUE_RTOL of the layer's strongest hit, the same
    # hits but for near-ties. One-image batches take other kernels, and are not special-cased.
    other = scan(model, str(photos), LAYERS, top=3, batch_size=batch_size, workers=workers,
                 progress=False)
    assert same_hits(reference, other) == []


@pytest.mark.agreement
def test_same_batch_size_and_threads_give_bit_identical_results(photos, model, reference):
    # PyTorch's guarantee on one device: the same batches and thread count, the same bits
    # (loader workers only decode images).
    other = scan(model, str(photos), LAYERS, top=3, batch_size=4, workers=2, progress=False)
    for layer in LAYERS:
        for key in reference.data["tops"][layer]:
            assert torch.equal(reference.data["tops"][layer][key], other.data["tops"][layer][key])


@pytest.fixture(scope="module")
def conv5_scan(photos, model):
    return scan(model, str(photos), ["conv5"], top=3, progress=False)


def altered(result, change):
    """A copy of a conv5 scan with its hit tensors changed by ``change(tops, strongest)``."""
    tops = result.data["tops"]["conv5"]
    copy = {k: v.clone() for k, v in tops.items()}
    change(copy, float(tops["values"].max()))
    return ScanResult({**result.data, "tops": {"conv5": copy}})


def swap(t, feature, a, b, keys=("values", "images", "ys", "xs", "runner_ups")):
    for key in keys:
        t[key][feature, [a, b]] = t[key][feature, [b, a]].clone()


@pytest.mark.parametrize("relative,agree", [(1e-6, True), (1e-3, False)])
def test_same_hits_holds_values_to_the_tolerance(conv5_scan, relative, agree):
    # Every value moved by `relative` of the layer's strongest hit, alternately up and down
    # (so no hit changes rank): inside VALUE_RTOL (1e-4) agrees, outside is reported.
    def perturb(t, strongest):
        fired = t["images"] >= 0
        sign = torch.ones_like(t["values"])
        sign[:, 1::2] = -1
        t["values"][fired] += (sign * relative * strongest)[fired]

    problems = same_hits(conv5_scan, altered(conv5_scan, perturb))
    assert (problems == []) == agree, problems[:3]
    if not agree:
        assert "values" in problems[0]


def test_same_hits_allows_two_images_tied_and_nothing_else(conv5_scan):
    def tie(t, strongest):  # feature 0's first two hits made tied ...
        t["values"][0, 1] = t["values"][0, 0] - 1e-6 * strongest

    def tie_and_swap(t, strongest):  # ... then swapped, as another kernel may order them
        tie(t, strongest)
        swap(t, 0, 0, 1)

    def swap_untied(t, strongest):  # the same swap of two hits 2x apart
        t["values"][0, 1] = t["values"][0, 0] * 0.5
        swap(t, 0, 0, 1, keys=("images", "ys", "xs", "runner_ups"))

    def moved(t, strongest):  # the strongest hit of feature 3 put on another image
        t["images"][3, 0] = (t["images"][3, 0] + 1) % len(conv5_scan.images)

    assert same_hits(altered(conv5_scan, tie), altered(conv5_scan, tie_and_swap)) \
        == []
    assert same_hits(conv5_scan, altered(conv5_scan, swap_untied))
    assert "not a near-tie" in same_hits(conv5_scan, altered(conv5_scan, moved))[0]


def test_same_hits_allows_an_image_tied_at_the_last_kept_rank(conv5_scan):
    # Its twin beyond the list is unseen: the last hit may be another image of equal value.
    def replaced(t, strongest):
        t["images"][5, 2] = (t["images"][5, 2] + 1) % len(conv5_scan.images)
        t["values"][5, 2] -= 1e-6 * strongest

    def untied(t, strongest):
        t["values"][5, 1] = t["values"][5, 0] * 0.5

    def replaced_earlier(t, strongest):  # the same at rank 0, between untied neighbours
        untied(t, strongest)
        t["images"][5, 0] = (t["images"][5, 0] + 1) % len(conv5_scan.images)

    assert same_hits(conv5_scan, altered(conv5_scan, replaced)) == []
    problems = same_hits(altered(conv5_scan, untied),
                                     altered(conv5_scan, replaced_earlier))
    assert len(problems) == 1 and "not a near-tie" in problems[0]


def test_same_hits_allows_two_positions_tied_within_one_map(conv5_scan):
    # The scan records each hit's runner-up in its own map: a position that moves within
    # one image is a near-tie only where that runner-up is within the tolerance.
    def tied_position(t, strongest):
        t["xs"][7, 0] = (t["xs"][7, 0] + 1) % 13
        t["runner_ups"][7, 0] = t["values"][7, 0] - 1e-6 * strongest

    def moved_position(t, strongest):
        t["xs"][7, 0] = (t["xs"][7, 0] + 1) % 13
        t["runner_ups"][7, 0] = t["values"][7, 0] * 0.5

    assert same_hits(conv5_scan, altered(conv5_scan, tied_position)) == []
    problems = same_hits(conv5_scan, altered(conv5_scan, moved_position))
    assert len(problems) == 1 and "same map" in problems[0]


@pytest.mark.agreement
def test_runner_ups_are_each_maps_second_strongest_position(photos, model):
    paths = [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    result = scan(model, paths, ["conv2"], top=2, progress=False)
    x = torch.cat([dv.load_image(p, model)[0] for p in paths])
    act = dv.Deconvnet(model).record(x, "conv2").activations["conv2"].flatten(2)
    ordered = act.sort(dim=2, descending=True).values
    tops = result.data["tops"]["conv2"]
    for f in (0, 50, 200):
        for rank, hit in enumerate(result.top("conv2", f)):
            n = paths.index(hit.image)
            assert float(tops["runner_ups"][f, rank]) == pytest.approx(float(ordered[n, f, 1]),
                                                                     rel=1e-5)
            assert hit.value == pytest.approx(float(ordered[n, f, 0]), rel=1e-5)


@pytest.mark.agreement
def test_resume_after_an_interruption_equals_an_uninterrupted_run(photos, model, reference,
                                                                  tmp_path, monkeypatch):
    out = tmp_path / "scan.pt"
    whole = reference  # batches of 4, as the interrupted and resumed runs
    real_merge, calls = scan_module._merge, {"n": 0}

    def merge_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-batch, after some layers of the 2nd batch were merged
            raise KeyboardInterrupt
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(scan_module, "_merge", merge_then_interrupt)
    with pytest.raises(ScanInterrupted, match="--resume"):
        scan(model, str(photos), LAYERS, top=3, batch_size=4, out=out, checkpoint_every=2,
             progress=False)
    assert not out.exists() and (tmp_path / "scan.pt.partial").exists()
    monkeypatch.setattr(scan_module, "_merge", real_merge)
    resumed = scan(model, str(photos), LAYERS, top=3, batch_size=4, out=out, resume=True,
                   progress=False)
    assert not (tmp_path / "scan.pt.partial").exists()
    for layer in LAYERS:
        for f in range(whole.features(layer)):
            assert resumed.top(layer, f) == whole.top(layer, f)
    assert resumed.skipped == whole.skipped


def test_resume_refuses_a_checkpoint_of_another_scan(photos, model, tmp_path, monkeypatch):
    out = tmp_path / "scan.pt"
    monkeypatch.setattr(scan_module, "_merge", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(ScanInterrupted):
        scan(model, str(photos), ["conv1"], top=3, out=out, progress=False)
    monkeypatch.undo()
    with pytest.raises(dv.ArgumentError, match=r"different scan \(layers differ\)"):
        scan(model, str(photos), ["conv2"], top=3, out=out, resume=True, progress=False)
    with pytest.raises(dv.ArgumentError, match=r"different scan \(top differ\)"):
        scan(model, str(photos), ["conv1"], top=4, out=out, resume=True, progress=False)


def test_load_scan_round_trip(reference, model, tmp_path):
    out = tmp_path / "r.pt"
    result = reference
    assert result.save(out) == str(out)
    loaded = load_scan(out)
    assert loaded.weights_digest == dv.weights_digest(model) == result.weights_digest
    assert loaded.model == "zfnet" and loaded.weights == "random" and loaded.k == 3
    assert loaded.layer_names == LAYERS
    assert [l["shape"] for l in loaded.layers] == [[96, 110, 110], [384, 13, 13], [4096]]
    assert loaded.images == result.images and loaded.skipped == result.skipped
    assert loaded.preprocessing.crop_size == 224
    assert set(loaded.versions) == {"deconvviz", "torch", "torchvision"}
    for layer in LAYERS:
        for f in range(0, loaded.features(layer), 37):
            assert loaded.top(layer, f) == result.top(layer, f)
    hit = loaded.top("conv3", 5)[0]
    assert hit.value > 0 and 0 <= hit.y < 13 and 0 <= hit.x < 13
    with pytest.raises(dv.ArgumentError, match="valid features are 0 to 383"):
        loaded.top("conv3", 384)
    bogus = tmp_path / "bogus.pt"
    torch.save({"a": 1}, bogus)
    with pytest.raises(dv.ArgumentError, match="not a deconvviz scan result"):
        load_scan(bogus)


def test_text_file_of_paths(photos, model, tmp_path):
    listing = tmp_path / "list.txt"
    names = ["chelsea.png", "coffee.png"]
    listing.write_text("# two photos\n" + "\n".join(str(photos / n) for n in names) + "\n\n")
    result = scan(model, str(listing), ["conv5"], top=2, progress=False)
    assert result.images == [str(photos / n) for n in names]


@pytest.mark.agreement
def test_two_process_torchrun_equals_one_process(photos, model, tmp_path):
    out = tmp_path / "two.pt"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", "-m", "deconvviz", "scan", "--model", "zfnet",
                          "--weights", "none", "--layers", "conv2,fc7", "--top", "3",
                          "--batch-size", "2", "--out", str(out), str(photos)],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    one = scan(model, str(photos), ["conv2", "fc7"], top=3, batch_size=2, progress=False)
    b = load_scan(out)
    assert one.skipped == b.skipped and len(one.skipped) == 2
    assert b.weights_digest == one.weights_digest  # the same seeded random weights
    # Other shards, batches and thread counts (torchrun runs 1 thread per process): the
    # cross-configuration guarantee, not bit-identity.
    assert same_hits(one, b) == []
    for layer in ("conv2", "fc7"):  # the ranks' histograms, added: each image counted once;
        # a value within rounding of a bin edge may fall in the next bin (exactness on equal
        # values: test_scan_distribution.py)
        assert torch.equal(b.histogram(layer).sum(dim=1), one.histogram(layer).sum(dim=1))
        moved = int((b.histogram(layer) - one.histogram(layer)).abs().sum()) // 2
        assert moved <= 0.002 * one.images_read * one.features(layer), (layer, moved)


def test_figure_command_on_a_saved_result(photos, model, tmp_path):
    out = tmp_path / "r.pt"
    scan(model, str(photos), ["conv2", "conv5"], top=9, out=out, progress=False)
    png = tmp_path / "fig2.png"
    res = invoke("figure", out, "--layer", "conv5", "--features", "random:6", "--dpi", "100",
                 "--out", png)
    assert res.returncode == 0, res.stderr
    with Image.open(png) as img:
        assert img.width == 700 and img.height > 200
    bad = invoke("figure", out, "--layer", "conv5", "--features", "0,999", "--out",
                 tmp_path / "x.png")
    assert bad.returncode == 2 and "valid features are 0 to 255" in bad.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.agreement
def test_projected_hits_match_their_scan_values(photos, model):
    result = scan(model, str(photos), ["conv3"], top=9, progress=False)
    hits = project_hits(result, "conv3", [0, 10], model=model)
    assert [h.feature for h in hits] == [0, 10]
    net = dv.Deconvnet(model)
    for fh in hits:
        assert len(fh.projections) == len(fh.hits) == 8  # the readable photos
        assert fh.projections[0].shape == (75, 75, 3) and fh.patches[0].shape == (75, 75, 3)
        # The strongest hit's crop is the full projection of that activation, cropped.
        top = fh.hits[0]
        x, _ = dv.load_image(top.image, model)
        full = net.project(x, "conv3", features=fh.feature)[0]
        assert np.isclose(np.abs(fh.projections[0]).sum(), float(full.abs().sum()), rtol=1e-5)
    fig = figures.scan_figure([hits])
    assert len(fig.axes) >= 4


def test_a_layer_rectified_in_place_afterwards_keeps_its_own_values(photos):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(inplace=True)).eval()
    with torch.no_grad():
        model[0].bias[0] = -100.0  # feature 0 is negative everywhere
    names = ["chelsea.png", "coffee.png"]
    result = scan(model, [str(photos / n) for n in names], ["0"], top=2, progress=False)
    x = torch.cat([dv.load_image(photos / n)[0] for n in names])
    with torch.no_grad():
        conv = model[0](x)
    expected = conv.flatten(2).max(dim=2).values.T.sort(dim=1, descending=True).values
    assert (expected < 0).any()  # some features are negative everywhere: ReLU would zero them
    for f in range(4):
        # The conv's own values (before the in-place ReLU), and only the positive ones:
        # a position whose activation is not positive is not a hit.
        positive = [float(v) for v in expected[f] if v > 0]
        got = [h.value for h in result.top("0", f)]
        assert got == pytest.approx(positive, rel=1e-6, abs=1e-7), f
    assert result.top("0", 0) == []


@pytest.mark.agreement
def test_a_feature_that_never_fires_keeps_no_hits(photos, model):
    # ZFNet conv3 with random weights has features whose strongest activation is 0 on
    # every photo: they keep no hits, never a 0.0 at (0, 0).
    result = scan(model, str(photos), ["conv3"], top=5, progress=False)
    x = torch.cat([dv.load_image(p, model)[0] for p in result.images
                   if p not in dict(result.skipped)])
    act = dv.Deconvnet(model).record(x, "conv3").activations["conv3"]
    fired = (act.flatten(2).amax(dim=2) > 0).sum(dim=0)  # images on which each feature fires
    assert (fired < 5).any()
    for f in range(act.shape[1]):
        hits = result.top("conv3", f)
        assert len(hits) == min(5, int(fired[f])), f
        assert all(h.value > 0 for h in hits)


def test_result_and_its_figure_count_the_same_images(photos, model):
    result = scan(model, str(photos), ["conv5"], top=2, progress=False)
    read = len(result.images) - len(result.skipped)
    assert read == result.images_read == 8 and len(result.skipped) == 2  # 4 photos, 4 crops
    assert f"{read} images read, 2 skipped" in repr(result)
    fig = result.figure("conv5", "0-1", model=model)
    assert f"of {read} images" in fig.texts[0].get_text()


def test_a_folder_without_a_readable_image_is_an_error(tmp_path, model):
    # It once gave a 0-image result and exit 0, and `figure` then drew an empty grid.
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("a.txt", "b.jpg"):
        (folder / name).write_text("not an image")
    out = tmp_path / "s.pt"
    with pytest.raises(dv.ImageError, match=r"no readable image: all 2 file\(s\) were skipped"):
        scan(model, str(folder), ["conv1"], out=out, progress=False)
    assert not out.exists() and not (tmp_path / "s.pt.partial").exists()
    done = invoke("scan", "--model", "zfnet", "--weights", "none", "--layers", "conv1",
                  "--out", out, folder)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"error: no readable image: all 2 file(s) were skipped; the first, {folder / 'a.txt'}")


def test_the_cli_lists_the_skipped_files(photos, tmp_path):
    done = invoke("scan", "--model", "zfnet", "--weights", "none", "--layers", "conv1",
                  "--top", "1", "--out", tmp_path / "s.pt", photos)
    assert done.returncode == 0, done.stderr
    assert "see result.skipped" not in done.stderr
    assert f"  {photos / 'notes.txt'}: " in done.stderr
    assert f"  {photos / 'crops' / 'cut.jpg'}: " in done.stderr


def test_figure_refuses_other_weights_than_the_scans(photos, model, tmp_path):
    # A scan with random weights, a figure asked for with a trained checkpoint: it once drew
    # the checkpoint's projections beside the random weights' patches, titled "untrained".
    out = tmp_path / "s.pt"
    scan(model, [str(photos / "chelsea.png")], ["conv1"], top=1, out=out, progress=False)
    other = dv.load_model("zfnet", weights=None)
    with torch.no_grad():
        other.features.conv1.weight.mul_(2)
    checkpoint = tmp_path / "w.pt"
    torch.save(other.state_dict(), checkpoint)
    done = invoke("figure", out, "--layer", "conv1", "--features", "0-3", "--weights",
                  checkpoint, "--out", tmp_path / "f.png")
    assert done.returncode == 2 and not (tmp_path / "f.png").exists()
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the scan ran with random weights (digest ")
    assert f"weights {checkpoint} differ" in line
    with pytest.raises(dv.WeightsError, match="the scan ran with random weights"):
        load_scan(out).figure("conv1", "0-3", model=other)
    # Its own weights draw it, and the title says which they are.
    fig = load_scan(out).figure("conv1", "0-3", model=model)
    assert fig.texts[0].get_text().endswith("- untrained weights")


def test_a_feature_without_hits_is_an_empty_slot_not_a_patch(photos, model):
    result = scan(model, str(photos), ["conv3"], top=5, progress=False)
    counts = {f: len(result.top("conv3", f)) for f in range(result.features("conv3"))}
    never = next(f for f, n in counts.items() if n == 0)
    few = next(f for f, n in counts.items() if 0 < n < 5)
    fig = result.figure("conv3", f"{never},{few}", model=model)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert f"#{never} (never fired)" in titles
    assert f"#{few} ({counts[few]} of 5 hits)" in titles


def test_two_scans_never_share_one_checkpoint(photos, model, tmp_path):
    out = tmp_path / "s.pt"
    lock = tmp_path / "s.pt.partial.lock"
    lock.write_text(str(os.getppid()))  # a live process holds it: a second scan refuses
    with pytest.raises(dv.ArgumentError, match=f"another scan \\(process {os.getppid()}\\) is "
                                               f"writing {out}"):
        scan(model, [str(photos / "chelsea.png")], ["conv1"], top=1, out=out, progress=False)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # left by a scan that ended
    ended.wait()
    lock.write_text(str(ended.pid))
    scan(model, [str(photos / "chelsea.png")], ["conv1"], top=1, out=out, progress=False)
    assert out.exists() and not lock.exists()


def test_memory_and_file_size_follow_the_hits_that_can_be_kept(photos, model, tmp_path):
    # --top 100000 on a few images once preallocated 100000 slots per feature (268 MB).
    out = tmp_path / "s.pt"
    paths = [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    result = scan(model, paths, ["conv1", "conv5"], top=100_000, out=out, progress=False)
    assert result.k == 100_000  # as asked; at most one hit per image can be kept
    assert result.data["tops"]["conv5"]["values"].shape == (256, 2)
    assert out.stat().st_size < 100_000
    assert len(result.top("conv1", 0)) <= 2
