"""Scan throughput against a bare forward pass of the same model, up to the deepest layer.

Run by hand:  .venv/bin/python benchmarks/scan_throughput.py [--images 64] [--threads 2]

For each model it times, over the same images (the bundled photos, repeated):
  forward   a bare torch.no_grad() forward of torchvision's create_feature_extractor up to the
            deepest requested layer, on tensors already decoded and preprocessed;
  load+fwd  the same, reading the files through the same DataLoader the scan uses;
  scan      deconvviz.scan end to end (reading, forward, running top-k).
and prints images/s and the ratios scan/forward and scan/(load+fwd).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from torchvision.models.feature_extraction import create_feature_extractor

import deconvviz as dv
from deconvviz.analyses.dataset_scan import _collate, _Images, scan
from deconvviz.data.images import preprocessing_for

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = os.path.join(os.path.dirname(HERE), "examples", "images")
CASES = [("zfnet", ["conv1", "conv3", "conv5"]), ("vgg16", ["conv3_3", "conv5_3"]),
         ("resnet50", ["layer1", "layer2", "layer3"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the scan")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS)
                    if f.endswith((".png", ".jpg")))
    paths = [photos[i % len(photos)] for i in range(args.images)]
    listing = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    listing.write("\n".join(paths))
    listing.close()
    print(f"{args.images} images, batch {args.batch_size}, {args.threads} threads, "
          f"scan with {args.workers} loader workers")
    print(f"{'model':<10} {'layers':<24} {'forward':>9} {'load+fwd':>9} {'scan':>9} "
          f"{'scan/fwd':>9} {'scan/(load+fwd)':>15}")
    for name, layers in CASES:
        model = dv.load_model(name, weights=None)
        net = dv.Deconvnet(model)
        deepest = net.aliases[layers[-1]]
        bare = create_feature_extractor(model, {deepest: "out"}).eval()
        prep = preprocessing_for(model)
        loader = lambda: DataLoader(_Images(paths, range(len(paths)), prep),  # noqa: E731,B023
                                    batch_size=args.batch_size, collate_fn=_collate)
        batches = [x for _, x, _ in loader()]
        scan(model, listing.name, layers=layers, progress=False)  # warm-up
        with torch.no_grad():
            bare(batches[0])
            t = time.perf_counter()
            for x in batches:
                bare(x)
            forward = args.images / (time.perf_counter() - t)
            t = time.perf_counter()
            for _, x, _ in loader():
                bare(x)
            load_forward = args.images / (time.perf_counter() - t)
        t = time.perf_counter()
        scan(model, listing.name, layers=layers, batch_size=args.batch_size, workers=args.workers,
             progress=False)
        scanned = args.images / (time.perf_counter() - t)
        print(f"{name:<10} {','.join(layers):<24} {forward:>7.1f}/s {load_forward:>7.1f}/s "
              f"{scanned:>7.1f}/s {scanned / forward:>9.2f} {scanned / load_forward:>15.2f}")
    os.unlink(listing.name)


if __name__ == "__main__":
    main()
