"""What a second newcomer found at the interface (issue 26): file names without colons, a
scan that opens from any folder and finds photos and weights that moved, help that agrees
with itself, SIGTERM handled as Ctrl-C, messages that say what is wrong, the atlas's pages,
and the same image inputs for compare and sanity_check.

One small scan is made through the command line (SqueezeNet 1.1 with random weights saved
as a checkpoint, its first convolution, two photos: the bundled cat and an 8x8 one); each
test then uses it from another folder."""
import importlib
import os
import re
import shutil
import signal
import threading

import numpy as np
import pytest
import torch
from conftest import CHELSEA, invoke
from PIL import Image

import deconvviz as dv

MODEL = "torchvision:squeezenet1_1"
LAYER = "features.0"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """``work/`` with ``photos/`` (big.png: the cat; tiny.png: 8x8), ``ck/zf_other.pt`` (the
    model's random weights as a checkpoint) and ``nc/scan.pt``, scanned from ``work/`` with
    relative paths (and ``--resume`` with no checkpoint to resume from)."""
    root = tmp_path_factory.mktemp("newcomer")
    work = root / "work"
    for folder in ("photos", "ck", "nc"):
        (work / folder).mkdir(parents=True)
    shutil.copy(CHELSEA, work / "photos" / "big.png")
    tiny = (np.random.RandomState(0).rand(8, 8, 3) * 255).astype(np.uint8)
    Image.fromarray(tiny).save(work / "photos" / "tiny.png")
    torch.save(dv.load_model(MODEL, weights=None).state_dict(), work / "ck" / "zf_other.pt")
    done = invoke("scan", "--model", MODEL, "--weights", "ck/zf_other.pt", "--layers", LAYER,
                  "--top", "2", "--resume", "--out", "nc/scan.pt", "photos/", cwd=work)
    assert done.returncode == 0, done.stderr
    return {"root": root, "work": work, "scan": work / "nc" / "scan.pt", "stderr": done.stderr}


def test_scan_resume_without_a_checkpoint_says_so_in_one_line(workspace):
    said = [l for l in workspace["stderr"].splitlines() if "checkpoint" in l]
    assert said == ["warning: no checkpoint to resume from (nc/scan.pt.partial does not "
                    "exist): scanning from the start"]


def test_default_names_have_no_colon_and_a_folder_takes_one_file_per_image(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.open(CHELSEA).resize((40, 30)).save(a)
    Image.open(CHELSEA).resize((30, 40)).save(b)
    (tmp_path / "many").mkdir()
    for out in ("many/", "many"):  # a trailing slash, or an existing folder
        done = invoke("show", "--model", MODEL, "--weights", "none", "--layer", LAYER,
                      "--features", "0", "--out", out, a, b, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        names = [f"{s}_torchvision-squeezenet1_1_features.0.png" for s in ("a", "b")]
        assert done.stdout.split() == [os.path.join(out, n) for n in names]
    assert sorted(os.listdir(tmp_path / "many")) == names
    assert not any(":" in n for n in os.listdir(tmp_path))


def test_the_scan_stores_absolute_paths_and_opens_from_another_folder(workspace, tmp_path):
    scan = dv.load_scan(workspace["scan"])
    photos = workspace["work"] / "photos"
    assert scan.data["meta"]["images"] == [str(photos / "big.png"), str(photos / "tiny.png")]
    assert scan.data["meta"]["weights"] == str(workspace["work"] / "ck" / "zf_other.pt")
    done = invoke("figure", workspace["scan"], "--features", "0", "--out", "fig.png",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fig.png").exists()


def test_an_older_scans_relative_paths_are_read_beside_it_or_where_it_was_made(workspace,
                                                                                tmp_path):
    data = torch.load(workspace["scan"], weights_only=True)
    # relative to the scan's folder: found from any working folder
    data["meta"] = {**data["meta"], "images": ["../photos/big.png", "../photos/tiny.png"],
                    "weights": "../ck/zf_other.pt"}
    torch.save(data, workspace["work"] / "nc" / "beside.pt")
    # relative to the folder it was made in (a scan of an older version): found from there
    data["meta"] = {**data["meta"], "images": ["photos/big.png", "photos/tiny.png"],
                    "weights": "ck/zf_other.pt"}
    torch.save(data, workspace["work"] / "nc" / "made_in_work.pt")
    photos = workspace["work"] / "photos"
    expected = [str(photos / "big.png"), str(photos / "tiny.png")]
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        beside = dv.load_scan(workspace["work"] / "nc" / "beside.pt")
        os.chdir(workspace["work"])
        made = dv.load_scan("nc/made_in_work.pt")
    finally:
        os.chdir(old)
    assert beside.images == expected and made.images == expected
    assert beside.weights_argument == str(workspace["work"] / "ck" / "zf_other.pt")
    assert [h.image for h in beside.top(LAYER, 0)] == [h.image for h in made.top(LAYER, 0)]


def test_moved_photos_and_weights(workspace, tmp_path):
    """The scan's photos and checkpoint move; the atlas finds them with --image-root and
    --weights, keeps the checks, and its pages name the weights where they are now."""
    moved = tmp_path / "moved"
    shutil.copytree(workspace["work"] / "photos", moved / "pics")
    (moved / "w").mkdir()
    shutil.copy(workspace["work"] / "ck" / "zf_other.pt", moved / "w" / "zf_renamed.pt")
    scan = tmp_path / "scan.pt"
    data = torch.load(workspace["scan"], weights_only=True)
    gone = str(tmp_path / "gone")  # where the scan found them: no longer there
    data["meta"] = {**data["meta"], "weights": os.path.join(gone, "zf_other.pt"),
                    "images": [os.path.join(gone, "photos", n) for n in ("big.png", "tiny.png")]}
    torch.save(data, scan)

    lost = invoke("atlas", scan, "--out", "site", cwd=tmp_path)
    assert lost.returncode == 2
    assert lost.stderr == (f"error: the scan's own weights are not where it found them: "
                           f"{gone}/zf_other.pt; give the same weights (digest "
                           f"{data['meta']['weights_digest']}) from where they are now with "
                           f"--weights FILE (Python: model=load_model(..., weights=FILE))\n")
    no_photos = invoke("atlas", scan, "--weights", "moved/w/zf_renamed.pt", "--out", "site",
                       cwd=tmp_path)
    assert no_photos.returncode == 2
    said = no_photos.stderr.splitlines()[-1]
    assert said.startswith(f"error: image not found: {gone}/photos/")
    assert "give their new folder with --image-root FOLDER" in said

    # another photo under the scanned name is refused (the scan's values are checked)
    (tmp_path / "swapped").mkdir()
    shutil.copy(moved / "pics" / "big.png", tmp_path / "swapped" / "tiny.png")
    shutil.copy(moved / "pics" / "tiny.png", tmp_path / "swapped" / "big.png")
    swapped = invoke("figure", scan, "--weights", "moved/w/zf_renamed.pt", "--image-root",
                     "swapped", "--features", "0", "--out", "f.png", cwd=tmp_path)
    assert swapped.returncode == 2 and "the file changed since the scan" in swapped.stderr

    done = invoke("atlas", scan, "--weights", "moved/w/zf_renamed.pt", "--image-root",
                  "moved/pics", "--out", "site", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    index = (site / "index.html").read_text()
    assert "weights zf_renamed.pt (digest" in index and "zf_other" not in index
    unit = (site / LAYER / "5.html").read_text()
    assert "Drawn with weights zf_renamed.pt." in unit
    assert not re.search(r"weights:? weights", unit, re.IGNORECASE)
    # the field's corner says which coordinate is y and which x, as the map position does
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", unit)
    assert len(captions) == 2
    for caption in captions:
        assert re.search(r"map position \(y \d+, x \d+\); receptive field 3x3 px \(height x "
                         r"width\) from \(y \d+, x \d+\) of the input", caption), caption
        # the 8x8 photo, enlarged 32 times to the 256-pixel short side, is marked
        small = "a small photo (8x8 px) enlarged 32x to the model's input" in caption
        assert small == ("tiny.png" in caption), caption

    # the same in Python; the figure's title names the weights where they are now
    result = dv.load_scan(scan, image_root=moved / "pics")
    fig = result.figure(LAYER, "0", model=dv.load_model(MODEL, weights=moved / "w" /
                                                        "zf_renamed.pt"))
    assert fig._suptitle.get_text().endswith("images - weights zf_renamed.pt")


def test_a_dead_units_page_does_not_explain_projections(workspace, tmp_path):
    scan = dv.load_scan(workspace["scan"])
    tops = {k: v.clone() for k, v in scan.data["tops"][LAYER].items()}
    tops["values"][3] = float("-inf")  # unit 3 never fired
    tops["images"][3] = -1
    dead = dv.ScanResult({**scan.data, "tops": {LAYER: tops}})
    site = dv.atlas(dead, tmp_path / "a", model=dv.load_model(MODEL, weights=dead.weights),
                    progress=False)
    page = open(site.unit_page(LAYER, 3), encoding="utf-8").read()
    assert "Never fired" in page and "projection beside the image patch" not in page
    alive = open(site.unit_page(LAYER, 4), encoding="utf-8").read()
    assert "projection beside the image patch" in alive


def test_help_says_what_weights_default_to():
    for command in ("atlas", "figure"):
        text = invoke(command, "--help").stdout
        options = text[text.index("Options:"):]
        weights = " ".join(options[options.index("--weights"):
                                   options.index("--image-root")].split())
        assert "[default: the scan's own]" in weights and "[default: default]" not in weights
        assert "--image-root FOLDER" in text


def test_a_damaged_scan_and_a_folder_are_named_as_such(workspace, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(workspace["scan"].read_bytes()[:2000])
    done = invoke("atlas", cut, "--out", tmp_path / "site")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {cut} is damaged or incomplete: a scan file that "
                                  f"cannot be read (")
    assert done.stderr.count("\n") == 1
    folder = invoke("atlas", workspace["work"] / "photos", "--out", tmp_path / "site")
    assert folder.returncode == 2
    assert folder.stderr == (f"error: {workspace['work'] / 'photos'} is a folder; give a scan "
                             f"result file (what deconvviz scan --out RESULT wrote), and scan "
                             f"a folder of photos with deconvviz scan first\n")


def _terminate_on_call(monkeypatch, module, name, call=1):
    """Make ``module.name`` send this process SIGTERM on its ``call``-th call."""
    real = getattr(module, name)
    calls = []

    def terminating(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, terminating)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_sigterm_cleans_up_as_ctrl_c_does(workspace, tmp_path, monkeypatch):
    atlas_module = importlib.import_module("deconvviz.analyses.atlas_pages")
    dataset_scan = importlib.import_module("deconvviz.analyses.dataset_scan")

    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        _terminate_on_call(patch, atlas_module, "write_pair")
        done = invoke("atlas", workspace["scan"], "--out", "site", cwd=tmp_path)
    assert done.returncode == 143 and done.stderr.endswith("error: terminated\n")
    assert os.listdir(tmp_path) == []  # no site.partial/ left behind
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again

    with monkeypatch.context() as patch:  # the second batch: the first is checkpointed
        _terminate_on_call(patch, dataset_scan, "merge", call=2)
        done = invoke("scan", "--model", MODEL, "--weights", "none", "--layers", LAYER,
                      "--batch-size", "1", "--checkpoint-every", "1", "--out", "s.pt",
                      workspace["work"] / "photos", cwd=tmp_path)
    assert done.returncode == 143
    assert done.stderr.strip().splitlines()[-1] == (
        "error: interrupted after 1 of 2 images; run again with --resume to continue")
    assert sorted(os.listdir(tmp_path)) == ["s.pt.partial"]  # the checkpoint; no lock


def test_sanity_check_takes_what_compare_takes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 5, stride=4),  # one layer to randomise
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x, _ = dv.load_image(CHELSEA)
    by_tensor = dv.sanity_check(model, x, methods=["gradient"], target=1)
    for images in (CHELSEA, [Image.open(CHELSEA)]):  # a path; a list holding a PIL image
        other = dv.sanity_check(model, images, methods=["gradient"], target=1)
        assert torch.equal(other.maps["gradient"], by_tensor.maps["gradient"])
    compared = dv.compare(model, x[0], methods=["gradient"], target=1)  # and compare takes tensors
    assert torch.equal(compared.maps["gradient"][0], by_tensor.maps["gradient"][0][0])
    assert compared.images == ["image 0"]
    with pytest.raises(dv.ArgumentError, match="a file path, a PIL image, a tensor"):
        dv.sanity_check(model, 3, methods=["gradient"])


def test_the_docs_list_every_notebook_and_install_from_the_clone():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    listed = open(os.path.join(root, "docs", "guide", "notebooks.md"), encoding="utf-8").read()
    notebooks = sorted(n for n in os.listdir(os.path.join(root, "examples"))
                       if n.endswith(".ipynb"))
    assert len(notebooks) >= 7
    assert [n for n in notebooks if f"`{n}`" not in listed] == []
    assert "jupyter lab examples/" in listed  # and how to get Jupyter
    pyproject = open(os.path.join(root, "pyproject.toml"), encoding="utf-8").read()
    assert re.search(r'^notebook = \[.*"jupyterlab>=', pyproject, re.MULTILINE)
    for page in ("install.md", "index.md"):  # deconvviz is not on PyPI
        text = open(os.path.join(root, "docs", page), encoding="utf-8").read()
        assert not re.search(r"pip install (\"?)deconvviz", text), page
        assert "pip install -e ." in text, page
