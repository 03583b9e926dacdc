"""End to end in a real browser: JupyterLab serves a notebook that creates the explorer;
headless Chromium, driven by Playwright, picks another layer and feature and sees the
projection change. The screenshot is kept in test-artifacts/explorer.png."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import EXAMPLES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("DECONVVIZ_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("DECONVVIZ_ARTIFACTS", os.path.join(ROOT, "test-artifacts"))


def _requirements():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    for module in ["playwright", "jupyterlab", "ipywidgets"]:
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[dev]')")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path):
    _requirements()
    port, token = _free_port(), "deconvviz-test"
    cell = (f"import deconvviz as dv\n"
            f"explorer = dv.explore('zfnet', {os.path.join(EXAMPLES, 'chelsea.png')!r}, "
            f"weights=None)\nexplorer")
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                           "outputs": [], "source": cell}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "explorer.ipynb").write_text(json.dumps(notebook))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--ServerApp.allow_root=True"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + server.stderr.read1().decode()[-2000:])
        yield f"{url}/lab/tree/explorer.ipynb?token={token}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_explorer_in_a_real_browser(jupyter_lab):
    from playwright.sync_api import sync_playwright

    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(jupyter_lab)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            # Once the kernel is idle, run the notebook from the Run menu.
            page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            projection = page.wait_for_selector(".deconvviz-projection", timeout=120_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('.deconvviz-projection');"
                " return i && i.naturalWidth > 0; }", timeout=60_000)
            before = projection.screenshot()
            source = "() => document.querySelector('.deconvviz-projection').src"
            page.select_option(".deconvviz-layer select", "conv5")
            label = "() => document.querySelector('.jp-OutputArea-output').innerText"
            # The kernel answers a layer change by picking its strongest feature; the image
            # is sent before the label, so once the label reads conv5 the image is conv5's.
            page.wait_for_function(f"() => ({label})().includes('conv5 #')", timeout=60_000)
            strongest = re.search(r"conv5 #(\d+)", page.evaluate(label)).group(1)
            wanted = "8" if strongest == "7" else "7"
            conv5_source = page.evaluate(source)
            feature = page.locator(".deconvviz-feature input")
            feature.fill(wanted)
            feature.press("Enter")
            page.wait_for_function(f"() => ({label})().includes('conv5 #{wanted}')",
                                   timeout=60_000)
            # A new image, decoded: not a fixed wait.
            page.wait_for_function(
                "([old]) => { const i = document.querySelector('.deconvviz-projection');"
                " return i.src !== old && i.complete && i.naturalWidth > 0; }",
                arg=[conv5_source], timeout=60_000)
            after = projection.screenshot()
            page.screenshot(path=os.path.join(ARTIFACTS, "explorer.png"), full_page=True)
            assert after != before, "the projection did not change on screen"
        finally:
            browser.close()
