"""Training throughput: ``dv.train`` against a bare PyTorch loop, and the cost of the paper's
filter renormalisation.

Both train ZFNet at 224x224 with SGD (momentum 0.9), the same batch and the same dropout.
The bare loop reads pre-decoded, pre-cropped tensors from memory; ``dv.train`` reads PNG
files from an image folder (decode, resize to 256, random 224 crop, flip, normalise) and
keeps its metrics, seeding and progress bar. Images/s are taken over the timed epochs
(the first one warms up). Renormalisation's cost is the same ``dv.train`` run with
``clip_rms=0.1`` against ``clip_rms=0``.

    .venv/bin/python benchmarks/training.py            # --images 96 --batch-size 32 --repeat 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import deconvviz as dv
from deconvviz.data.synthetic import make_shapes


def bare_loop(images: int, batch: int, epochs: int) -> float:
    """Images/s of a plain SGD loop on tensors already in memory (epochs after the first)."""
    torch.manual_seed(0)
    model = dv.load_model("zfnet", weights=None).train()
    x = torch.randn(images, 3, 224, 224)
    y = torch.randint(0, 3, (images,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    start = 0.0
    for epoch in range(epochs):
        if epoch == 1:
            start = time.perf_counter()
        order = torch.randperm(images)
        for b in range(images // batch):
            idx = order[b * batch:(b + 1) * batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (epochs - 1) * (images // batch) * batch / (time.perf_counter() - start)


def deconvviz_train(folder: str, out: str, batch: int, epochs: int, clip: float,
                    workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    result = dv.train("zfnet", folder, out=out, epochs=epochs, batch_size=batch, lr=1e-3,
                      clip_rms=clip, workers=workers, save_at=[], progress=False)
    timed = result.metrics[1:]
    return sum(m["images_per_s"] * m["seconds"] for m in timed) / sum(m["seconds"]
                                                                      for m in timed)


def renormalisation_seconds(repeat: int = 50) -> float:
    """Seconds per call of the renormalisation of ZFNet's five conv layers."""
    from deconvviz.training import renormalise_filters

    model = dv.load_model("zfnet", weights=None)
    renormalise_filters(model, 0.1)
    start = time.perf_counter()
    for _ in range(repeat):
        renormalise_filters(model, 0.1)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="the first one is warm-up")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the three loops, interleaved; medians are reported")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    runs: dict = {"bare": [], "ours": [], "unclipped": []}
    try:
        folder = os.path.join(tmp, "shapes")
        make_shapes(folder, per_class=args.images // 3, size=256, seed=0)
        for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits all
            runs["bare"].append(bare_loop(args.images, args.batch_size, args.epochs))
            runs["ours"].append(deconvviz_train(folder, os.path.join(tmp, "r1"),
                                                args.batch_size, args.epochs, 0.1, args.workers))
            runs["unclipped"].append(deconvviz_train(folder, os.path.join(tmp, "r0"),
                                                     args.batch_size, args.epochs, 0.0,
                                                     args.workers))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bare, ours, unclipped = (statistics.median(runs[k]) for k in ("bare", "ours", "unclipped"))
    print("runs (images/s): " + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in vs)
                                          for k, vs in runs.items()))
    print(f"ZFNet, 224x224, batch {args.batch_size}, {args.images} images/epoch, "
          f"{torch.get_num_threads()} threads, workers {args.workers}, median of "
          f"{args.repeat}\n")
    print("| loop | images/s | ratio to bare |\n|---|---:|---:|")
    print(f"| bare PyTorch, tensors in memory | {bare:.2f} | 1.00 |")
    print(f"| dv.train, PNG folder, clip_rms 0.1 | {ours:.2f} | {ours / bare:.2f} |")
    print(f"| dv.train, PNG folder, clip_rms 0 | {unclipped:.2f} | {unclipped / bare:.2f} |")
    step = args.batch_size / ours
    renorm = renormalisation_seconds()
    print(f"\nfilter renormalisation: {1000 * renorm:.2f} ms per step, "
          f"{100 * renorm / step:.2f}% of a {step:.2f} s step (measured directly); the "
          f"clip_rms 0 / 0.1 runs differ by {100 * (unclipped / ours - 1):+.1f}%, which "
          f"includes run-to-run noise")


if __name__ == "__main__":
    main()
