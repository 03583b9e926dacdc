"""AttnLRP's cost on ViT-B/16: deconvviz against a plain forward-and-backward and LXT 2.1.

    .venv/bin/python benchmarks/attnlrp.py [--batch 2] [--size 224] [--repeats 3] [--agreement]

torchvision's ``vit_b_16`` with random weights (its zero-initialised head drawn), a batch of
random images, float32, one thread. Each repeat runs, interleaved in one process: the plain
forward pass and the input's gradient (``torch.autograd.grad(model(x)[:, c].sum(), x)``; and
``backward()``, which also computes the weights' gradients, as training does), deconvviz's
``dv.attribute(model, x, method=M, target=c)`` (the public call: its target's forward pass,
the recorded forward pass and the relevance pass), the same method on a reused projector
(record and relevance pass only), and LXT 2.1 (tests/lxt_oracle.py: LXT's patches and
zennit's Gamma, gradient times input). The table gives the best of the repeats in seconds
and each time over the forward-and-backward's. ``--agreement`` adds the largest difference
of each method from LXT relative to LXT's largest value, in float64, one image.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torchvision

import deconvviz as dv
from deconvviz.analyses.attribution import _reverse, resolve_target
from deconvviz.engine import Projector
from deconvviz.engine.precision import rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lxt_oracle import lxt_relevance  # noqa: E402  (tests/lxt_oracle.py)

METHODS = {"lrp_attn": "softmax", "lrp_cp": "conservative"}


def vit_b_16(dtype=torch.float32, size=224):
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=size)
    torch.nn.init.normal_(model.heads.head.weight, std=0.01)
    return model.to(dtype).eval()


def _timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def timings(batch: int, size: int, repeats: int):
    model = vit_b_16(size=size)
    torch.manual_seed(1)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        c = int(model(x)[0].argmax())

    def plain():  # the gradient of the class at the pixels, nothing else
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xx)[:, c].sum(), xx)

    def training():  # backward() as training runs it: the weights' gradients too
        xx = x.clone().requires_grad_(True)
        model(xx)[:, c].sum().backward()
        model.zero_grad(set_to_none=True)

    nets = {m: Projector(model, method=m) for m in METHODS}
    target = resolve_target(model, x, c, None, None, "max")
    runs = {"forward + backward": plain, "forward + backward(), weights' gradients": training}
    for method, attention in METHODS.items():
        runs[f"dv.attribute {method}"] = lambda m=method: dv.attribute(model, x, method=m,
                                                                      target=c)
        runs[f"projector {method}"] = lambda m=method: _reverse(nets[m], x, target)
        runs[f"LXT 2.1 {method}"] = lambda a=attention: lxt_relevance(model, x, c, attention=a)
    for run in runs.values():  # warm up: traces, imports, allocator
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], _timed(run))
    return best


def agreement():
    model = vit_b_16(torch.float64)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        c = int(model(x).argmax())
    for method, attention in METHODS.items():
        ours = dv.attribute(model, x, method=method, target=c).map
        theirs = lxt_relevance(model, x, c, attention=attention)
        print(f"| {method} | {rel_error(ours, theirs):.1e} | {float(ours.sum()):.4f} | "
              f"{float(theirs.sum()):.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--agreement", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    best = timings(args.batch, args.size, args.repeats)
    base = best["forward + backward"]
    print("| run | best s | x forward + backward |")
    print("|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} |")
    if args.agreement:
        print("\n| method | max diff / max LXT | input relevance, deconvviz | LXT |")
        print("|---|---:|---:|---:|")
        agreement()


if __name__ == "__main__":
    main()
