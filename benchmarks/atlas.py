"""The atlas's cost: scan a folder, build the atlas, report times and the site's size.

    .venv/bin/python benchmarks/atlas.py                     # the docs' two cases, 300 photos
    .venv/bin/python benchmarks/atlas.py --images 20 --case zfnet:conv1

The folder is the bundled photos (examples/images, examples/faces) flipped, cropped and
rescaled (seeded): enough to time the atlas, not a dataset. Random weights (no download).
Each command runs in its own process, as a user runs it.
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(ROOT, "examples", "images", n)
          for n in ("chelsea.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg")] + \
    [os.path.join(ROOT, "examples", "faces", "astronaut.png")]
CASES = ["zfnet:conv1,conv2,conv3,conv4,conv5", "vgg16:conv5_3"]


def make_photos(folder: str, count: int, seed: int = 0) -> None:
    """``count`` variants of the bundled photos: a random crop (40-100% of each side),
    mirrored half of the time, rescaled by 0.5-1.5."""
    rng = random.Random(seed)
    per_photo = -(-count // len(PHOTOS))
    written = 0
    for path in PHOTOS:
        base = os.path.splitext(os.path.basename(path))[0]
        with Image.open(path) as img:
            img = img.convert("RGB")
            for i in range(per_photo):
                if written == count:
                    return
                w, h = img.size
                s = rng.uniform(0.4, 1.0)
                cw, ch = int(w * s), int(h * s)
                x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
                v = img.crop((x0, y0, x0 + cw, y0 + ch))
                if rng.random() < 0.5:
                    v = ImageOps.mirror(v)
                f = rng.uniform(0.5, 1.5)
                v = v.resize((max(32, int(cw * f)), max(32, int(ch * f))), Image.BICUBIC)
                v.save(os.path.join(folder, f"{base}_{i:02d}.jpg"), quality=90)
                written += 1


def run(*args) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deconvviz", *args], capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    run.stderr = proc.stderr
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--case", action="append", help="model:layer,layer (repeatable)")
    parser.add_argument("--keep", default=None, help="Keep the atlases in this folder.")
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="deconvviz-atlas-bench-")
    photos = os.path.join(work, "photos")
    os.makedirs(photos)
    make_photos(photos, options.images)
    print(f"{options.images} photos, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print("| model | layers | units | scan s | atlas s | projections s | writing s | "
          "writing / projections | files | size MB | zip MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in options.case or CASES:
        model, layers = case.split(":")
        scan_path, site = os.path.join(work, f"{model}.pt"), os.path.join(work, model)
        scan_s = run("scan", "--model", model, "--weights", "none", "--layers", layers,
                     "--top", "9", "--out", scan_path, photos)
        atlas_s = run("atlas", scan_path, "--out", site)
        found = re.search(r"([\d,]+) units, .*?; ([\d,]+) files, ([\d.]+) MB; projections "
                          r"([\d.]+) s, writing ([\d.]+) s", run.stderr)
        units, files, size, projection, writing = found.groups()
        archive = shutil.make_archive(site, "zip", work, model)
        with zipfile.ZipFile(archive) as handle:
            assert handle.testzip() is None
        print(f"| {model} | {layers} | {units} | {scan_s:.0f} | {atlas_s:.0f} | "
              f"{float(projection):.0f} | {float(writing):.0f} | "
              f"{float(writing) / float(projection):.2f} | {files} | {size} | "
              f"{os.path.getsize(archive) / 1e6:.1f} |")
        if options.keep:
            shutil.copytree(site, os.path.join(options.keep, model), dirs_exist_ok=True)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
