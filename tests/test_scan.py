"""What a scan finds: the top-k of a brute force, the same hits whatever the batches,
workers, processes or interruptions, and the values each hit projects back to."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import captured_outputs
from scan_photos import LAYERS, make_photos

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses import dataset_scan as scan_module
from deconvviz.analyses.dataset_scan import ScanInterrupted, scan
from deconvviz.analyses.scan_result import ScanResult, load_scan, same_hits
from deconvviz.analyses.top_hits import project_hits
from deconvviz.data.images import list_images


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


@pytest.fixture(scope="module")
def reference(photos, model):
    """The scan the agreement tests compare against: batches of 4, no workers."""
    return scan(model, str(photos), layers=LAYERS, hits=3, batch_size=4, progress=False)


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
    paths = [os.path.abspath(p) for p in list_images(str(photos))]
    assert reference.images == paths
    expected = brute_force(model, reference, 3)
    assert same_hits(expected, reference) == []
    def where(hits):
        return [(h.image, h.y, h.x) for h in hits]

    same = sum(where(reference.top(l, f)) == where(expected.top(l, f)) for l in LAYERS
               for f in range(reference.features(l)))
    assert same >= 0.99 * sum(reference.features(l) for l in LAYERS)  # near-ties are rare
    assert len({h.image for h in reference.top("conv3", 0)}) == 3  # one hit per image


@pytest.mark.agreement
@pytest.mark.parametrize("batch_size,workers", [(1, 0), (5, 0), (3, 2)])
def test_results_do_not_depend_on_batch_size_or_workers(photos, model, reference, batch_size,
                                                        workers):
    # What is guaranteed across batch sizes (PyTorch's convolutions and matrix products may
    # differ in the last bits): values to VALUE_RTOL of the layer's strongest hit, the same
    # hits but for near-ties. One-image batches take other kernels, and are not special-cased.
    other = scan(model, str(photos), layers=LAYERS, hits=3, batch_size=batch_size, workers=workers,
                 progress=False)
    assert same_hits(reference, other) == []


@pytest.mark.agreement
def test_same_batch_size_and_threads_give_bit_identical_results(photos, model, reference):
    # PyTorch's guarantee on one device: the same batches and thread count, the same bits
    # (loader workers only decode images).
    other = scan(model, str(photos), layers=LAYERS, hits=3, batch_size=4, workers=2, progress=False)
    for layer in LAYERS:
        for key in reference.data["tops"][layer]:
            assert torch.equal(reference.data["tops"][layer][key], other.data["tops"][layer][key])


@pytest.mark.agreement
def test_runner_ups_are_each_maps_second_strongest_position(photos, model):
    paths = [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    result = scan(model, paths, layers=["conv2"], hits=2, progress=False)
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
    real_merge, calls = scan_module.merge, {"n": 0}

    def merge_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-batch, after some layers of the 2nd batch were merged
            raise KeyboardInterrupt
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(scan_module, "merge", merge_then_interrupt)
    with pytest.raises(ScanInterrupted, match="--resume"):
        scan(model, str(photos), layers=LAYERS, hits=3, batch_size=4, out=out, checkpoint_every=2,
             progress=False)
    assert not out.exists() and (tmp_path / "scan.pt.partial").exists()
    monkeypatch.setattr(scan_module, "merge", real_merge)
    resumed = scan(model, str(photos), layers=LAYERS, hits=3, batch_size=4, out=out, resume=True,
                   progress=False)
    assert not (tmp_path / "scan.pt.partial").exists()
    for layer in LAYERS:
        for f in range(whole.features(layer)):
            assert resumed.top(layer, f) == whole.top(layer, f)
    assert resumed.skipped == whole.skipped


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


@pytest.mark.agreement
def test_two_process_torchrun_equals_one_process(photos, model, tmp_path):
    out = tmp_path / "two.pt"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", "-m", "deconvviz", "scan", "--model", "zfnet",
                          "--weights", "none", "--layers", "conv2,fc7", "--top", "3",
                          "--batch-size", "2", "--out", str(out), str(photos)],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    one = scan(model, str(photos), layers=["conv2", "fc7"], hits=3, batch_size=2, progress=False)
    b = load_scan(out)
    assert one.skipped == b.skipped and len(one.skipped) == 1  # notes.txt: not an image
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


@pytest.mark.agreement
def test_projected_hits_match_their_scan_values(photos, model):
    result = scan(model, str(photos), layers=["conv3"], hits=9, progress=False)
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
    result = scan(model, [str(photos / n) for n in names], layers=["0"], hits=2, progress=False)
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
    result = scan(model, str(photos), layers=["conv3"], hits=5, progress=False)
    x = torch.cat([dv.load_image(p, model)[0] for p in result.images
                   if p not in dict(result.skipped)])
    act = dv.Deconvnet(model).record(x, "conv3").activations["conv3"]
    fired = (act.flatten(2).amax(dim=2) > 0).sum(dim=0)  # images on which each feature fires
    assert (fired < 5).any()
    for f in range(act.shape[1]):
        hits = result.top("conv3", f)
        assert len(hits) == min(5, int(fired[f])), f
        assert all(h.value > 0 for h in hits)
