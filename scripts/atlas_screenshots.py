"""The docs' screenshots of an atlas, taken with headless Chromium (Playwright), offline.

    python scripts/atlas_screenshots.py ATLAS_FOLDER LAYER UNIT

writes docs/figures/atlas_layer.png (the layer page, sorted by strongest activation) and
docs/figures/atlas_unit.png (the unit's page).
"""
import os
import sys

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("DECONVVIZ_CHROMIUM", "/usr/bin/chromium")


def main(folder: str, layer: str, unit: str) -> None:
    root = "file://" + os.path.realpath(folder) + "/"
    out = os.path.join(ROOT, "docs", "figures")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 760})
            context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(root)
                          else r.abort())
            page = context.new_page()
            page.goto(root + f"{layer}.html")
            page.click("text=strongest activation")
            page.wait_for_function("() => Array.from(document.images).slice(0, 60)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=os.path.join(out, "atlas_layer.png"))
            page.goto(root + f"{layer}/{unit}.html")
            page.wait_for_function("() => Array.from(document.images)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=os.path.join(out, "atlas_unit.png"), full_page=True)
        finally:
            browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
