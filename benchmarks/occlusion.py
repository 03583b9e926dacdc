"""Occlusion: deconvviz's incremental passes against Captum's ``Occlusion``, in one process.

Run by hand:

    .venv/bin/python benchmarks/occlusion.py [--cases vgg16:48:8,vgg16:16:8,resnet50:48:8]
        [--repeats 1] [--batch 64] [--threads 2] [--figure docs/figures/occlusion_windows.png]

For each case (model, square, stride) on one 224x224 photo, random weights, the top-1 class:
Captum's ``Occlusion.attribute`` on the softmax (the same positions, ``perturbations_per_eval``
= the batch) and ``dv.occlusion`` (its default incremental passes, the same batch), run
alternately (Captum, deconvviz, Captum, ...) so that a load on the machine falls on both.
Printed per case: both times, the ratio, the limit of an exact method (a full pass's
multiply-adds over those that must be redone, each position's changed windows with the pools'
alignment and the clipping at the borders, averaged over the grid), the share of a full
pass's multiply-adds deconvviz computed, and each run's peak memory above the process's
resident size before it (sampled every 2 ms from /proc). ``--sanity``: the cascading
randomisation (``dv.sanity_check``, VGG16, its four default methods) with and without reuse
of what it has not changed, alternately, and the largest difference between their maps.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measured(fn):
    """(seconds, peak MB above the resident size before, result) of ``fn()``."""
    start_rss, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return seconds, max(peak[0], _rss_mb()) - start_rss, result


def occlusion_case(dv, torch, name: str, size: int, stride: int, batch: int, repeats: int):
    import torch.nn.functional as F
    from captum.attr import Occlusion

    from deconvviz.engine.graph import trace
    from deconvviz.engine.incremental import IncrementalForward

    model = dv.load_model(name, weights=None)
    x, _ = dv.load_image(os.path.join(HERE, "examples", "images", "chelsea.png"), model)
    with torch.no_grad():
        target = int(model(x).argmax())
    occluder = Occlusion(lambda inp: F.softmax(model(inp), 1))

    def captum():
        with torch.no_grad():
            return occluder.attribute(x, sliding_window_shapes=(3, size, size),
                                      strides=(3, stride, stride), baselines=0, target=target,
                                      perturbations_per_eval=batch)

    def ours():
        return dv.occlusion(model, x, target=target, size=size, stride=stride,
                            batch_size=batch)
    times = {"captum": [], "deconvviz": []}
    peaks = {"captum": [], "deconvviz": []}
    for _ in range(repeats):
        for label, fn in (("captum", captum), ("deconvviz", ours)):
            seconds, peak, _ = measured(fn)
            times[label].append(seconds)
            peaks[label].append(peak)
    traced = trace(model)
    plan = IncrementalForward(traced, [traced.output_node.args[0].name])
    plan.set_base(x)
    rows = (x.shape[-1] - size) // stride + 1
    ys = [i * stride for i in range(rows) for _ in range(rows)]
    xs = [j * stride for _ in range(rows) for j in range(rows)]
    macs = plan.cost(ys, xs, (size, size), batch)
    c, d = min(times["captum"]), min(times["deconvviz"])
    return dict(model=name, square=f"{size} / {stride}", positions=rows * rows, captum=c,
                deconvviz=d, ratio=c / d, limit=macs["full"] / macs["minimum"],
                share=macs["computed"] / macs["full"], captum_mb=max(peaks["captum"]),
                deconvviz_mb=max(peaks["deconvviz"]))


def window_figure(dv, torch, path: str, size: int = 48, at: int = 88) -> None:
    """The docs' figure: VGG16's changed window per convolution and pool for one square."""
    from deconvviz.engine.incremental import IncrementalForward
    from deconvviz.figures import changed_windows_figure, save_figure

    model = dv.load_model("vgg16", weights=None)
    x, _ = dv.load_image(os.path.join(HERE, "examples", "images", "chelsea.png"), model)
    net = dv.Deconvnet(model)
    traced = net.traced
    names = {}
    for alias, module in net.aliases.items():
        for node in traced.module_outputs.get(module, []):
            names.setdefault(node.name, alias)
    plan = IncrementalForward(traced, [traced.output_node.args[0].name])
    plan.set_base(x)
    layers = []
    for name, s in plan.spans([at], [at], (size, size)).items():
        op = traced.ops[name]
        if op.kind in ("conv", "maxpool"):
            h, w = plan.base[op.node].shape[-2:]
            users = [n.name for n in op.node.users]  # VGG's conv1_1 names the ReLU after it
            label = names.get(name) or next((names[u] for u in users if u in names), name)
            layers.append((label, (h, w),
                           (int(s.y0[0]), int(s.y1[0]), int(s.x0[0]), int(s.x1[0]))))
    fig = changed_windows_figure(layers, title=f"VGG16, 224x224 input: what a {size}-px "
                                 f"square at ({at}, {at}) changes in each layer", columns=6)
    print(save_figure(fig, path, dpi=110))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="vgg16:48:8,vgg16:16:8,resnet50:48:8")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="also draw the changed window per layer (VGG16) into PNG")
    args = parser.parse_args()
    import torch

    import deconvviz as dv

    torch.set_num_threads(args.threads)
    print("| model | square / stride | positions | deconvviz s | Captum s | ratio | limit | "
          "multiply-adds computed | deconvviz peak MB | Captum peak MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in filter(None, args.cases.split(",")):
        name, size, stride = case.split(":")
        r = occlusion_case(dv, torch, name, int(size), int(stride), args.batch, args.repeats)
        print(f"| {r['model']} | {r['square']} | {r['positions']} | {r['deconvviz']:.1f} | "
              f"{r['captum']:.1f} | {r['ratio']:.2f}x | {r['limit']:.2f}x | "
              f"{100 * r['share']:.1f}% | {r['deconvviz_mb']:.0f} | {r['captum_mb']:.0f} |",
              flush=True)
    if args.figure:
        window_figure(dv, torch, args.figure)


if __name__ == "__main__":
    main()
