"""A scan's inputs and outputs: files skipped and reported, text files of paths, checkpoints
and their locks, saved results, the figure drawn from them, and the command line."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import invoke
from PIL import Image
from scan_photos import make_photos

import deconvviz as dv
from deconvviz.analyses import dataset_scan as scan_module
from deconvviz.analyses.dataset_scan import ScanInterrupted, scan
from deconvviz.analyses.scan_result import load_scan


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


def test_unreadable_files_are_skipped_and_reported(photos, model):
    result = scan(model, str(photos), layers=["conv1"], hits=2, progress=False)
    skipped = dict(result.skipped)
    # A file that is not an image by its extension is not an unreadable image (issue 35,
    # item 19): it is listed apart, and never read.
    assert set(skipped) == {str(photos / "crops" / "cut.jpg")}
    assert "truncated" in skipped[str(photos / "crops" / "cut.jpg")]
    assert result.data["not_images"] == [str(photos / "notes.txt")]
    assert str(photos / "notes.txt") not in result.images
    assert all(h.image not in skipped for f in range(96) for h in result.top("conv1", f))


def test_resume_refuses_a_checkpoint_of_another_scan(photos, model, tmp_path, monkeypatch):
    out = tmp_path / "scan.pt"
    monkeypatch.setattr(scan_module, "merge", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(ScanInterrupted):
        scan(model, str(photos), layers=["conv1"], hits=3, out=out, progress=False)
    monkeypatch.undo()
    with pytest.raises(dv.ArgumentError, match=r"different scan \(layers differ\)"):
        scan(model, str(photos), layers=["conv2"], hits=3, out=out, resume=True, progress=False)
    with pytest.raises(dv.ArgumentError, match=r"different scan \(top differ\)"):
        scan(model, str(photos), layers=["conv1"], hits=4, out=out, resume=True, progress=False)


def test_text_file_of_paths(photos, model, tmp_path):
    listing = tmp_path / "list.txt"
    names = ["chelsea.png", "coffee.png"]
    listing.write_text("# two photos\n" + "\n".join(str(photos / n) for n in names) + "\n\n")
    result = scan(model, str(listing), layers=["conv5"], hits=2, progress=False)
    assert result.images == [str(photos / n) for n in names]


def test_figure_command_on_a_saved_result(photos, model, tmp_path):
    out = tmp_path / "r.pt"
    scan(model, str(photos), layers=["conv2", "conv5"], hits=9, out=out, progress=False)
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


def test_result_and_its_figure_count_the_same_images(photos, model):
    result = scan(model, str(photos), layers=["conv5"], hits=2, progress=False)
    read = len(result.images) - len(result.skipped)
    assert read == result.images_read == 8 and len(result.skipped) == 1  # 4 photos, 4 crops
    assert f"{read} images read, 1 skipped" in repr(result)
    fig = result.figure("conv5", "0-1", model=model)
    assert f"of {read} images" in fig.texts[0].get_text()


def test_a_folder_without_a_readable_image_is_an_error(tmp_path, model):
    # It once gave a 0-image result and exit 0, and `figure` then drew an empty grid.
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("a.txt", "b.jpg"):
        (folder / name).write_text("not an image")
    out = tmp_path / "s.pt"
    with pytest.raises(dv.ImageError, match=r"no readable image: all 1 file\(s\) were skipped"):
        scan(model, str(folder), layers=["conv1"], out=out, progress=False)
    assert not out.exists() and not (tmp_path / "s.pt.partial").exists()
    done = invoke("scan", "--model", "zfnet", "--weights", "none", "--layers", "conv1",
                  "--out", out, folder)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"error: no readable image: all 1 file(s) were skipped; the first, {folder / 'b.jpg'}")


def test_the_cli_lists_the_skipped_files(photos, tmp_path):
    done = invoke("scan", "--model", "zfnet", "--weights", "none", "--layers", "conv1",
                  "--top", "1", "--out", tmp_path / "s.pt", photos)
    assert done.returncode == 0, done.stderr
    assert "see result.skipped" not in done.stderr
    assert f"  {photos / 'crops' / 'cut.jpg'}: " in done.stderr
    assert "notes.txt" not in done.stderr  # not an image: listed only with --verbose
    done = invoke("scan", "--model", "zfnet", "--weights", "none", "--layers", "conv1",
                  "--hits", "1", "--out", tmp_path / "v.pt", "--verbose", photos)
    assert done.returncode == 0, done.stderr
    assert f"not images (skipped by extension): 1 file(s):\n  {photos / 'notes.txt'}\n" \
        in done.stderr


def test_figure_refuses_other_weights_than_the_scans(photos, model, tmp_path):
    # A scan with random weights, a figure asked for with a trained checkpoint: it once drew
    # the checkpoint's projections beside the random weights' patches, titled "untrained".
    out = tmp_path / "s.pt"
    scan(model, [str(photos / "chelsea.png")], layers=["conv1"], hits=1, out=out, progress=False)
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
    result = scan(model, str(photos), layers=["conv3"], hits=5, progress=False)
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
        scan(model, [str(photos / "chelsea.png")], layers=["conv1"], hits=1, out=out, progress=False)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # left by a scan that ended
    ended.wait()
    lock.write_text(str(ended.pid))
    scan(model, [str(photos / "chelsea.png")], layers=["conv1"], hits=1, out=out, progress=False)
    assert out.exists() and not lock.exists()


def test_memory_and_file_size_follow_the_hits_that_can_be_kept(photos, model, tmp_path):
    # --top 100000 on a few images once preallocated 100000 slots per feature (268 MB).
    out = tmp_path / "s.pt"
    paths = [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    result = scan(model, paths, layers=["conv1", "conv5"], hits=100_000, out=out, progress=False)
    assert result.k == 100_000  # as asked; at most one hit per image can be kept
    assert result.data["tops"]["conv5"]["values"].shape == (256, 2)
    assert out.stat().st_size < 100_000
    assert len(result.top("conv1", 0)) <= 2
