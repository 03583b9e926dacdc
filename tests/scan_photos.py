"""The photo folder the scan tests read (``test_scan*.py``); each file builds it once."""
import os
import shutil

from conftest import EXAMPLES
from PIL import Image

LAYERS = ["conv1", "conv3", "fc6"]


def make_photos(root):
    """Six real photos plus their crops, a text file, a truncated JPEG, in nested folders."""
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
