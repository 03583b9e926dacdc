"""Scan format 3: each feature's distribution of every image's strongest activation, in fixed
bins that merge by integer addition (ranks, resumed runs), checked against a brute-force
oracle that bins in plain Python (math.frexp), not with the scan's bit arithmetic."""
import math
import os

import pytest
import torch
from conftest import EXAMPLES, captured_outputs

import deconvviz as dv
from deconvviz.analyses import activation_histogram as histogram
from deconvviz.analyses import dataset_scan as scan_module
from deconvviz.analyses.dataset_scan import ScanInterrupted, scan
from deconvviz.analyses.scan_result import load_scan

PHOTOS = sorted(os.path.join(EXAMPLES, n) for n in os.listdir(EXAMPLES)
                if n.endswith((".png", ".jpg")))
LAYERS = ["conv2", "fc7"]


def oracle_bin(v: float) -> int:
    """The bin of a float32 value, from its definition: 8 bins per octave, 2**LOW..2**HIGH."""
    if not v > 0:
        return 0
    if v >= 2.0 ** histogram.HIGH:
        return histogram.BINS - 1
    if v < 2.0 ** histogram.LOW:
        return 1
    m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    octave, j = e - 1, math.floor((2 * m - 1) * histogram.PER_OCTAVE)
    return 2 + (octave - histogram.LOW) * histogram.PER_OCTAVE + j


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


def test_bins_match_their_definition_and_their_edges():
    torch.manual_seed(0)
    exponents = torch.empty(4000).uniform_(-40, 40)
    values = torch.cat([2.0 ** exponents, -(2.0 ** exponents[:50]),
                        torch.tensor([0.0, -0.0, float("nan"), float("inf"), float("-inf"),
                                      2.0 ** -32, 2.0 ** 32, 1.0, 1.125, 1.25 - 2 ** -20,
                                      3.0, 1e-45])])
    edges = histogram.edges()
    assert len(edges) == histogram.BINS + 1
    got = histogram.bin_of(values).tolist()
    for v, b in zip(values.tolist(), got):
        assert b == oracle_bin(v), v
        if b > 0:
            assert edges[b] <= v and (v < edges[b + 1] or b == histogram.BINS - 1), (v, b)
    # hand-computed: 1.0 = 2**0 is the first bin of octave 0, 2 + (0 - LOW) * 8 = 258
    assert histogram.bin_of(torch.tensor([1.0, 1.125, 1.25, 2.0])).tolist() == [258, 259, 260,
                                                                                 266]


def test_pack_round_trip():
    hist = histogram.empty(5)
    hist[1, 3], hist[4, 300], hist[4, 0] = 7, 2, 11
    packed = histogram.pack(hist)
    assert packed["counts"].numel() == 3
    assert torch.equal(histogram.unpack(packed), hist)


def strongest_by_brute_force(model, paths, layer):
    """Each image's strongest activation per feature, ``[N, C]``, from one plain forward of
    every image at once, read with a hook."""
    x = torch.cat([dv.load_image(p, model)[0] for p in paths])
    path = dv.Deconvnet(model).aliases[layer]
    with captured_outputs(model.get_submodule(path), detach=True) as out, torch.no_grad():
        model(x)
    return out[0].flatten(2).amax(dim=2) if out[0].dim() == 4 else out[0]


@pytest.mark.agreement
def test_distribution_equals_a_brute_force_oracle(model):
    # Batches of 3 against one batch of 4: values agree to rounding, so a value within 1e-5
    # (relative) of a bin edge may land on either side; no such value is tolerated elsewhere.
    result = scan(model, PHOTOS, layers=LAYERS, hits=2, batch_size=3, progress=False)
    assert result.format == "deconvviz-scan/3" and result.has_distribution
    for layer in LAYERS:
        strongest = strongest_by_brute_force(model, PHOTOS, layer)
        expected = torch.zeros(strongest.shape[1], histogram.BINS, dtype=torch.long)
        unsure = set()
        for n in range(strongest.shape[0]):
            for f, v in enumerate(strongest[n].tolist()):
                expected[f, oracle_bin(v)] += 1
                if oracle_bin(v * (1 - 1e-5)) != oracle_bin(v * (1 + 1e-5)):
                    unsure.add(f)
        hist = result.histogram(layer)
        assert hist.dtype == torch.long and hist.shape == expected.shape
        assert (hist.sum(dim=1) == len(PHOTOS)).all()
        sure = [f for f in range(hist.shape[0]) if f not in unsure]
        assert len(sure) > 0.95 * hist.shape[0]
        assert torch.equal(hist[sure], expected[sure]), layer
        assert torch.equal(result.fired(layer), (strongest > 0).sum(dim=0)), layer
        # the top hits and the distribution agree: a feature with no hit never fired
        for f in sure[:50]:
            assert (len(result.top(layer, f)) == 0) == (int(result.fired(layer)[f]) == 0)


@pytest.mark.agreement
def test_shards_merge_exactly_into_the_whole(model):
    # One image per batch: each image's values are bit-identical in every run (PyTorch's
    # guarantee for the same batch, threads and device), so the counts of two disjoint
    # shards, added, equal those of the whole scan exactly (what torchrun ranks do).
    layers = ["conv2", "conv5"]
    whole = scan(model, PHOTOS, layers=layers, hits=2, batch_size=1, progress=False)
    even = scan(model, PHOTOS[0::2], layers=layers, hits=2, batch_size=1, progress=False)
    odd = scan(model, PHOTOS[1::2], layers=layers, hits=2, batch_size=1, progress=False)
    for layer in layers:
        assert torch.equal(even.histogram(layer) + odd.histogram(layer), whole.histogram(layer))
        assert torch.equal(even.fired(layer) + odd.fired(layer), whole.fired(layer))


@pytest.mark.agreement
def test_a_resumed_scan_counts_every_image_once(model, tmp_path, monkeypatch):
    out = tmp_path / "scan.pt"
    layers = ["conv1", "conv2"]
    paths = PHOTOS + [PHOTOS[0]] * 2  # six images, three batches of two
    whole = scan(model, paths, layers=layers, hits=2, batch_size=2, progress=False)
    real_merge, calls = scan_module.merge, {"n": 0}

    def merge_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # in the 2nd batch, after its first layer was merged
            raise KeyboardInterrupt
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(scan_module, "merge", merge_then_interrupt)
    with pytest.raises(ScanInterrupted):
        scan(model, paths, layers=layers, hits=2, batch_size=2, out=out, checkpoint_every=1,
             progress=False)
    monkeypatch.setattr(scan_module, "merge", real_merge)
    resumed = scan(model, paths, layers=layers, hits=2, batch_size=2, out=out, resume=True,
                   progress=False)
    for layer in layers:
        assert torch.equal(resumed.histogram(layer), whole.histogram(layer))
        assert int(resumed.histogram(layer).sum(dim=1)[0]) == len(paths)
    loaded = load_scan(out)
    for layer in layers:
        assert torch.equal(loaded.histogram(layer), whole.histogram(layer))


def test_older_scans_load_without_a_distribution(model, tmp_path):
    result = scan(model, PHOTOS[:1], layers=["conv5"], hits=1, progress=False)
    data = {k: v for k, v in result.data.items() if k != "histograms"}
    data["format"] = "deconvviz-scan/2"
    torch.save(data, tmp_path / "old.pt")
    old = load_scan(tmp_path / "old.pt")
    assert old.format == "deconvviz-scan/2" and not old.has_distribution
    assert old.histogram("conv5") is None and old.fired("conv5") is None
    assert old.top("conv5", 0) == result.top("conv5", 0)
    with pytest.raises(dv.ArgumentError, match="not in this scan"):
        old.histogram("conv9")
