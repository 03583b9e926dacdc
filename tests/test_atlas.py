"""The atlas: a static website of every unit of a scan. Its pages, checked as files (links,
tiles, what each page says), and in a real browser (Chromium, offline, from the file system)."""
import copy
import html.parser
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import EXAMPLES, assert_untouched, invoke, snapshot

import deconvviz as dv
from deconvviz.analyses.scan_result import ScanResult
from deconvviz.figures.atlas_tiles import pair_halves
from deconvviz.figures.display import crop_window, to_uint8

PHOTOS = sorted(os.path.join(EXAMPLES, n) for n in os.listdir(EXAMPLES)
                if n.endswith((".png", ".jpg")))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("DECONVVIZ_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("DECONVVIZ_ARTIFACTS", os.path.join(ROOT, "test-artifacts"))
LAYERS = ["conv1", "conv2"]


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


@pytest.fixture(scope="module")
def scanned(model):
    return dv.scan(model, PHOTOS, layers=LAYERS, hits=2, progress=False)


@pytest.fixture(scope="module")
def site(scanned, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "atlas"
    before = snapshot(model)
    result = dv.atlas(scanned, out, model=model, progress=False)
    assert_untouched(model, before)
    return result


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))


def parsed(path):
    parser = _Links()
    parser.feed(open(path, encoding="utf-8").read())
    return parser


def test_every_link_and_image_resolves_inside_the_folder(site):
    root = os.path.realpath(site.path)
    pages = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
             if f.endswith(".html")]
    assert len(pages) == 1 + len(LAYERS) + 96 + 256
    for page in pages:
        found = parsed(page)
        for ref in found.links + found.images:
            assert "://" not in ref and not ref.startswith("/"), (page, ref)
            target = os.path.realpath(os.path.join(os.path.dirname(page), ref))
            assert target.startswith(root + os.sep) and os.path.isfile(target), (page, ref)
    assert not os.path.exists(root + ".partial")


def test_unit_pages_show_every_hit_with_its_value_file_and_position(site, scanned):
    for layer, unit in (("conv1", 5), ("conv2", 17)):
        hits = scanned.top(layer, unit)
        page = site.unit_page(layer, unit)
        assert page == os.path.join(site.path, layer, f"{unit}.html")
        text = open(page, encoding="utf-8").read()
        images = parsed(page).images
        assert len(images) == len(hits) > 0  # a projection beside its patch, per hit
        for hit in hits:
            assert f"{hit.value:.4g}" in text
            assert os.path.basename(hit.image) in text
            assert f"(y {hit.y}, x {hit.x})" in text
        fired = int(scanned.fired(layer)[unit])
        assert f"on {fired:,} of {scanned.images_read:,} images" in text
        assert f'href="{unit - 1}.html"' in text and f'href="{unit + 1}.html"' in text
        assert 'href="../index.html"' in text and f'href="../{layer}.html"' in text


def test_tiles_are_the_hits_projections_and_patches(site, scanned, model):
    # Oracle: the full-size reverse pass (not the cone the atlas uses) of the strongest
    # hit, cropped to its field and scaled; the JPEG (4:4:4, quality 88) keeps it to 3 grey
    # levels of 255 on average.
    net = dv.Deconvnet(model)
    for layer, unit in (("conv1", 3), ("conv2", 40)):
        hit = scanned.top(layer, unit)[0]
        x, rgb = dv.load_image(hit.image, model)
        window = net.layer(layer).geometry.window(hit.y, hit.x)
        seed = torch.zeros_like(net.record(x, layer).activations[layer])
        seed[0, unit, hit.y, hit.x] = float(hit.value)
        full = net.project(x, layer, signal=seed)[0].permute(1, 2, 0).numpy()
        patch = crop_window(rgb, *window)
        expected = {"projection": to_uint8(crop_window(full, *window), photo=patch),
                    "patch": patch}
        pair = cv2.imread(os.path.join(site.path, layer, "img", f"u{unit}_r0.jpg"))[:, :, ::-1]
        for (kind, want), tile in zip(expected.items(), pair_halves(pair)):
            tile = cv2.resize(tile, want.shape[1::-1], interpolation=cv2.INTER_AREA)
            error = np.abs(tile.astype(float) - want.astype(float)).mean()
            assert error < 3, (layer, unit, kind, error)


def test_layer_pages_mark_dead_units_and_sort(site, scanned):
    text = open(os.path.join(site.path, "conv2.html"), encoding="utf-8").read()
    assert text.count('class="unit') == 256
    dead = [f for f in range(256) if not scanned.top("conv2", f)]
    assert dead  # random ZFNet conv2 has units that never fire on the four photos
    assert text.count('class="unit dead"') == len(dead)
    for f in dead:
        assert f'href="conv2/{f}.html" data-unit="{f}"' in text
        assert "Never fired" in open(site.unit_page("conv2", f), encoding="utf-8").read()
    assert "sortUnits('strongest'" in text and "sortUnits('rate'" in text
    assert text.count('loading="lazy"') == 256 - len(dead)
    index = open(site.index, encoding="utf-8").read()
    assert f"<td>{len(dead)} ({100 * len(dead) / 256:.1f}%)</td>" in index
    assert "untrained" in index and scanned.weights_digest in index


def test_jupyter_shows_a_layer_grid_and_a_link(site):
    assert "index.html" in site._repr_html_() and "data:image/png;base64," in site._repr_html_()
    grid = cv2.imdecode(np.frombuffer(site._repr_png_(), np.uint8), cv2.IMREAD_COLOR)
    assert grid.shape[:2] == (4 * 50 - 2, 16 * 50 - 2)  # conv1's first 64 units, 16 a row


def test_a_zero_is_not_drawn_as_a_hit(scanned, model, tmp_path):
    # Scans of format 1 kept a feature's strongest value even where it was 0; such a hit is
    # not drawn, the page says how many real hits remain.
    tops = {l: {k: v.clone() for k, v in scanned.data["tops"][l].items()} for l in LAYERS}
    tops["conv1"]["values"][7, 1] = 0.0
    old = {k: v for k, v in scanned.data.items() if k != "histograms"}
    old = ScanResult({**old, "tops": tops, "format": "deconvviz-scan/1"})
    site = dv.atlas(old, tmp_path / "a", model=model, layers=["conv1"], progress=False)
    text = open(site.unit_page("conv1", 7), encoding="utf-8").read()
    assert len(parsed(site.unit_page("conv1", 7)).images) == 1
    assert "1 of 2 hits" in text
    assert (tmp_path / "a" / "conv1" / "img" / "u7_r0.jpg").exists()
    assert not (tmp_path / "a" / "conv1" / "img" / "u7_r1.jpg").exists()
    # ... and an older scan's pages say that the distribution was not recorded
    assert "The distribution was not recorded" in text
    assert "did not record the distribution" in open(site.index, encoding="utf-8").read()
    assert "how often it fires (not recorded)" in open(tmp_path / "a" / "conv1.html").read()


def test_other_weights_than_the_scans_are_refused(scanned, model, tmp_path):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.features.conv1.weight.mul_(2)
    with pytest.raises(dv.WeightsError, match="the scan ran with random weights"):
        dv.atlas(scanned, tmp_path / "a", model=other, progress=False)
    assert os.listdir(tmp_path) == []


def test_an_image_changed_since_the_scan_is_refused(model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTOS[0], folder / "a.png")
    shutil.copy(PHOTOS[1], folder / "b.png")
    result = dv.scan(model, str(folder), layers=["conv1"], hits=2, progress=False)
    shutil.copy(PHOTOS[2], folder / "b.png")
    before = snapshot(model)
    with pytest.raises(dv.ImageError, match="changed since the scan"):
        dv.atlas(result, tmp_path / "a", model=model, progress=False)
    assert_untouched(model, before)
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_the_command(scanned, tmp_path):
    scanned.save(tmp_path / "s.pt")
    out = tmp_path / "site"
    done = invoke("atlas", tmp_path / "s.pt", "--layer", "conv1", "--method", "guided",
                  "--image-format", "webp", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "index.html")
    assert "96 units" in done.stderr and "projections" in done.stderr
    assert (out / "conv1" / "img" / "u0_r0.webp").exists()
    assert "guided, signed scaling" in (out / "index.html").read_text()
    again = invoke("atlas", tmp_path / "s.pt", "--layer", "conv1", "--out", out)
    assert again.returncode == 0, again.stderr  # an earlier atlas is replaced
    assert (out / "conv1" / "img" / "u0_r0.jpg").exists()
    assert not (out / "conv1" / "img" / "u0_r0.webp").exists()
    bad = invoke("atlas", tmp_path / "s.pt", "--layer", "conv9", "--out", tmp_path / "x")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: layer 'conv9' is not in this scan; it has conv1, "
                                  "conv2")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    busy = invoke("atlas", tmp_path / "s.pt", "--out", tmp_path / "notes")
    assert busy.returncode == 2 and "is not empty and holds no atlas; give a new or empty folder" in busy.stderr
    assert os.listdir(tmp_path / "notes") == ["mine.txt"]


def _browser_requirements():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e "
                                             "'.[dev]')")


class _OfflineTab:
    """A Chromium tab on the atlas folder ``root``: it records every request, refuses any
    that leaves the folder, and collects console errors and failed loads."""

    def __init__(self, browser, root: str):
        self.root = root
        self.requests, self.outside, self.errors = [], [], []
        self.pending = set()
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        context.route("**/*", self._route)
        page = self.page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", self._failed)
        page.on("request", lambda r: self.pending.add(r))
        page.on("requestfinished", lambda r: self.pending.discard(r))
        page.on("requestfailed", lambda r: self.pending.discard(r))

    def _route(self, r):  # nothing may leave the folder: record it, and refuse it
        self.requests.append(r.request.url)
        if not r.request.url.startswith(self.root):
            self.outside.append(r.request.url)
            return r.abort()
        return r.continue_()

    def _failed(self, request):
        # Chromium cancels (ERR_ABORTED) the lazy loads of a page it leaves or of
        # cards a sort moves off screen: not the site's fault when the file is there
        # (a missing file fails with ERR_FILE_NOT_FOUND, and is an error)
        path = request.url[len("file://"):]
        if ("ERR_ABORTED" in str(request.failure) and request.url.startswith(self.root)
                and os.path.isfile(path) and os.path.getsize(path) > 0):
            return
        self.errors.append(f"failed: {request.url} ({request.failure})")

    def settle(self):
        """Wait until no request is in flight (a page left earlier aborts them)."""
        for _ in range(200):
            if not self.pending:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError(f"requests still pending: {self.pending}")

    def visit(self, url):
        """Open ``url``, let every lazy image load, and check images and links;
        returns (images, lazy images)."""
        page, root = self.page, self.root
        page.goto(url)
        # scroll through, so that every lazy image is asked for, then wait for each
        page.evaluate("async () => { for (let y = 0; y < document.body.scrollHeight;"
                      " y += 400) { window.scrollTo(0, y);"
                      " await new Promise(r => setTimeout(r, 20)); } }")
        page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete)", timeout=30_000)
        broken = page.evaluate("() => Array.from(document.images)"
                               ".filter(i => i.naturalWidth === 0).map(i => i.src)")
        assert broken == [], broken
        hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a'))"
                              ".map(a => a.href)")
        assert hrefs and all(h.startswith(root) for h in hrefs), hrefs
        for href in hrefs:
            assert os.path.isfile(href[len("file://"):]), href
        self.settle()
        return (page.evaluate("() => document.images.length"),
                page.locator("img[loading=lazy]").count())


def _launch_chromium(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--allow-file-access-from-files"])


def _browse_the_layer_page(tab) -> int:
    """From the index to conv2's page: its cards, their sorting; the images it showed."""
    page = tab.page
    assert tab.visit(tab.root + "index.html") == (0, 0)
    page.click("a[href='conv2.html']")
    page.wait_for_load_state("load")
    shown, lazy = tab.visit(page.url)
    dead = page.locator(".unit.dead").count()
    assert shown == lazy > 200 and dead + shown == 256
    page.click("text=strongest activation")
    values = page.evaluate("() => Array.from(document.querySelectorAll('#units > a'))"
                           ".map(a => Number(a.dataset.strongest))")
    assert values == sorted(values, reverse=True) and len(values) == 256
    page.click(".sort button:text-is('unit')")
    first = page.evaluate("() => document.querySelector('#units > a').dataset.unit")
    assert first == "0"
    tab.settle()  # moved cards may ask for their lazy images again
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "atlas_layer.png"))
    return shown


def _browse_the_unit_pages(tab, site):
    """Three of conv2's unit pages, then back by their links: previous unit, the layer."""
    page, root = tab.page, tab.root
    for unit in (0, 17, 255):
        shown, lazy = tab.visit(root + f"conv2/{unit}.html")
        assert shown == len(site.layers[1].units[unit].hits) and lazy == 0
    page.click("a[rel=prev]")
    page.wait_for_load_state("load")
    assert page.url == root + "conv2/254.html"
    tab.settle()
    page.click("a[href='../conv2.html']")
    page.wait_for_load_state("load")
    assert page.url == root + "conv2.html"
    tab.settle()


def test_the_atlas_in_a_real_browser_offline(site):
    _browser_requirements()
    from playwright.sync_api import sync_playwright

    root = "file://" + os.path.realpath(site.path) + "/"
    with sync_playwright() as pw:
        browser = _launch_chromium(pw)
        try:
            tab = _OfflineTab(browser, root)
            layer_images = _browse_the_layer_page(tab)
            _browse_the_unit_pages(tab, site)
        finally:
            browser.close()
    assert tab.outside == [] and tab.errors == []
    # every image the layer page showed was asked for (how often Chromium asks again, from its
    # cache or after a sort, varies: a count of all requests is not a test)
    images = {u for u in tab.requests if u.endswith((".jpg", ".png", ".webp"))}
    assert any(u.endswith(".jpg") for u in images) and len(images) >= layer_images
