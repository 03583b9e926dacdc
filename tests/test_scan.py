import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import EXAMPLES
from PIL import Image

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses import dataset_scan as scan_module
from deconvviz.analyses.dataset_scan import ScanInterrupted, load_scan, scan
from deconvviz.analyses.top_hits import project_hits
from deconvviz.cli import cli

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


def brute_force(model, paths, layer_path, k):
    """Top-k per feature from one plain forward over all readable images, via a hook."""
    xs, kept = [], []
    for i, p in enumerate(paths):
        try:
            xs.append(dv.load_image(p, model)[0])
            kept.append(i)
        except dv.ImageError:
            pass
    captured = []
    handle = model.get_submodule(layer_path).register_forward_hook(
        lambda m, i, o: captured.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(torch.cat(xs))
    finally:
        handle.remove()
    act = captured[0]
    flat = act.reshape(act.shape[0], act.shape[1], -1)
    values, pos = flat.max(dim=2)
    width = act.shape[-1] if act.dim() == 4 else 1
    expected = {}
    for f in range(act.shape[1]):
        rows = sorted(((-float(values[j, f]), kept[j], int(pos[j, f])) for j in range(len(kept))))
        expected[f] = [(paths[i], p // width, p % width, -v) for v, i, p in rows[:k]]
    return expected


def as_tuples(hits):
    return [(h.image, h.y, h.x, h.value) for h in hits]


def test_top_k_equals_brute_force(photos, model):
    result = scan(model, str(photos), LAYERS, top=4, batch_size=3, progress=False)
    paths = scan_module.list_images(str(photos))
    assert result.images == paths
    for layer in LAYERS:
        expected = brute_force(model, paths, dv.Deconvnet(model).aliases[layer], 4)
        for f in range(result.features(layer)):
            got = as_tuples(result.top(layer, f))
            assert [g[:3] for g in got] == [e[:3] for e in expected[f]], (layer, f)
            assert np.allclose([g[3] for g in got], [e[3] for e in expected[f]], rtol=1e-6)
    assert len({h.image for h in result.top("conv3", 0)}) == 4  # one hit per image


def test_unreadable_files_are_skipped_and_reported(photos, model):
    result = scan(model, str(photos), ["conv1"], top=2, progress=False)
    skipped = dict(result.skipped)
    assert set(skipped) == {str(photos / "notes.txt"), str(photos / "crops" / "cut.jpg")}
    assert "not an image" in skipped[str(photos / "notes.txt")]
    assert all(h.image not in skipped for f in range(96) for h in result.top("conv1", f))


@pytest.mark.parametrize("batch_size,workers", [(1, 0), (5, 0), (3, 2)])
def test_results_do_not_depend_on_batch_size_or_workers(photos, model, batch_size, workers):
    # What is guaranteed across batch sizes (PyTorch's convolutions may differ in the last
    # bits): values to VALUE_RTOL of the layer's strongest hit, the same hits but for near-ties.
    reference = scan(model, str(photos), LAYERS, top=3, batch_size=4, progress=False)
    other = scan(model, str(photos), LAYERS, top=3, batch_size=batch_size, workers=workers,
                 progress=False)
    assert scan_module.same_hits(reference, other) == []


def test_same_batch_size_and_threads_give_bit_identical_results(photos, model):
    a = scan(model, str(photos), LAYERS, top=3, batch_size=3, progress=False)
    b = scan(model, str(photos), LAYERS, top=3, batch_size=3, workers=2, progress=False)
    for layer in LAYERS:
        for key in ("values", "images", "ys", "xs"):
            assert torch.equal(a.data["tops"][layer][key], b.data["tops"][layer][key])


def test_same_hits_allows_near_ties_and_nothing_else(photos, model):
    result = scan(model, str(photos), ["conv5"], top=3, progress=False)
    tops = result.data["tops"]["conv5"]
    strongest = float(tops["values"].max())

    def altered(change):
        data = {**result.data, "tops": {"conv5": {k: v.clone() for k, v in tops.items()}}}
        change(data["tops"]["conv5"])
        return scan_module.ScanResult(data)

    def near_tie(t):  # feature 0's first two hits, made tied, then swapped
        t["values"][0, 1] = t["values"][0, 0] - 1e-6 * strongest
        for key in ("values", "images", "ys", "xs"):
            t[key][0, [0, 1]] = t[key][0, [1, 0]].clone()

    def real_swap(t):  # the same swap without a tie
        t["values"][0, 1] = t["values"][0, 0] * 0.5
        for key in ("images", "ys", "xs"):
            t[key][0, [0, 1]] = t[key][0, [1, 0]].clone()

    def off_value(t):
        t["values"][3, 0] += 1e-3 * strongest

    tied = altered(near_tie)
    reference = altered(lambda t: t["values"].__setitem__((0, 1), t["values"][0, 0] - 1e-6
                                                         * strongest))
    assert scan_module.same_hits(reference, tied) == []
    assert scan_module.same_hits(result, altered(real_swap))  # a real difference is caught
    assert scan_module.same_hits(result, altered(off_value))


def test_resume_after_an_interruption_equals_an_uninterrupted_run(photos, model, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "scan.pt"
    whole = scan(model, str(photos), LAYERS, top=3, batch_size=2, progress=False)
    real_merge, calls = scan_module._merge, {"n": 0}

    def merge_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # mid-batch, after some layers of the 3rd batch were merged
            raise KeyboardInterrupt
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(scan_module, "_merge", merge_then_interrupt)
    with pytest.raises(ScanInterrupted, match="--resume"):
        scan(model, str(photos), LAYERS, top=3, batch_size=2, out=out, checkpoint_every=2,
             progress=False)
    assert not out.exists() and (tmp_path / "scan.pt.partial").exists()
    monkeypatch.setattr(scan_module, "_merge", real_merge)
    resumed = scan(model, str(photos), LAYERS, top=3, batch_size=2, out=out, resume=True,
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
    with pytest.raises(dv.ArgumentError, match="different scan"):
        scan(model, str(photos), ["conv2"], top=3, out=out, resume=True, progress=False)


def test_load_scan_round_trip(photos, model, tmp_path):
    out = tmp_path / "r.pt"
    result = scan(model, str(photos), LAYERS, top=3, out=out, progress=False)
    loaded = load_scan(out)
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


def test_two_process_torchrun_equals_one_process(photos, tmp_path):
    out1, out2 = tmp_path / "one.pt", tmp_path / "two.pt"
    common = ["scan", "--model", "zfnet", "--weights", "none", "--layers", "conv2,fc7",
              "--top", "3", "--batch-size", "2"]
    one = subprocess.run([sys.executable, "-m", "deconvviz", *common, "--out", str(out1),
                          str(photos)], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", "-m", "deconvviz", *common, "--out", str(out2),
                          str(photos)], capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr
    a, b = load_scan(out1), load_scan(out2)
    assert a.skipped == b.skipped and len(a.skipped) == 2
    # Other shards, batches and thread counts (torchrun runs 1 thread per process): the
    # cross-configuration guarantee, not bit-identity.
    assert scan_module.same_hits(a, b) == []


def test_figure_command_on_a_saved_result(photos, model, tmp_path):
    out = tmp_path / "r.pt"
    scan(model, str(photos), ["conv2", "conv5"], top=9, out=out, progress=False)
    runner = CliRunner()
    png = tmp_path / "fig2.png"
    res = runner.invoke(cli, ["figure", str(out), "--layer", "conv5", "--features", "random:6",
                              "--dpi", "100", "--out", str(png)])
    assert res.exit_code == 0, res.output
    with Image.open(png) as img:
        assert img.width == 700 and img.height > 200
    bad = runner.invoke(cli, ["figure", str(out), "--layer", "conv5", "--features", "0,999",
                              "--out", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "valid features are 0 to 255" in bad.output
    assert not (tmp_path / "x.png").exists()


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
        full = net.project(x, "conv3", fh.feature)[0]
        assert np.isclose(np.abs(fh.projections[0]).sum(), float(full.abs().sum()), rtol=1e-5)
    fig = figures.scan_figure([hits])
    assert len(fig.axes) >= 4


def test_a_layer_rectified_in_place_afterwards_keeps_its_own_values(photos):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(inplace=True)).eval()
    with torch.no_grad():
        model[0].bias[0] = -100.0  # feature 0 is negative everywhere
    result = scan(model, [str(photos / "chelsea.png"), str(photos / "coffee.png")], ["0"],
                  top=2, progress=False)
    x = torch.cat([dv.load_image(photos / n)[0] for n in ["chelsea.png", "coffee.png"]])
    with torch.no_grad():
        conv = model[0](x)
    expected = conv.flatten(2).max(dim=2).values.T.sort(dim=1, descending=True).values
    assert (expected < 0).any()  # some features are negative everywhere: ReLU would zero them
    got = torch.tensor([[h.value for h in result.top("0", f)] for f in range(4)])
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_result_and_its_figure_count_the_same_images(photos, model):
    result = scan(model, str(photos), ["conv5"], top=2, progress=False)
    read = len(result.images) - len(result.skipped)
    assert read == result.images_read == 8 and len(result.skipped) == 2  # 4 photos, 4 crops
    assert f"{read} images read, 2 skipped" in repr(result)
    fig = result.figure("conv5", "0-1", model=model)
    assert f"of {read} images" in fig.texts[0].get_text()
