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
resident size before it (sampled every 2 ms from /proc).

``--sanity``: the cascading randomisation (``dv.sanity_check``, VGG16, one 224x224 photo, all
16 layers) with its default methods and with four (deconvnet, guided, gradient, Grad-CAM), run
three ways alternately: as it ran before it reused anything (``reuse=False`` and SSIM by
torchmetrics in float64, restored here), ``reuse=False`` (every method on the whole model at
every step, SSIM computed as now) and ``reuse=True`` (the default); printed: the times, the
ratios, and the largest difference of the maps (relative to each map's largest value) and of
the scores between the reused and the first run.
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

    from deconvviz.engine.passes.graph import trace
    from deconvviz.engine.passes.incremental import IncrementalForward

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
    from deconvviz.engine.passes.incremental import IncrementalForward
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


def _scores_before(reference, other):
    """The sanity check's scores as computed before the reuse: torchmetrics' SSIM in float64,
    one image at a time."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    from torchmetrics.functional.regression import spearman_corrcoef

    a, b = reference.sum(dim=1).double(), other.sum(dim=1).double()
    out = {"spearman_abs": 0.0, "spearman_signed": 0.0, "ssim": 0.0}
    for i in range(a.shape[0]):
        out["spearman_abs"] += float(spearman_corrcoef(b[i].abs().flatten(),
                                                       a[i].abs().flatten()))
        out["spearman_signed"] += float(spearman_corrcoef(b[i].flatten(), a[i].flatten()))
        scaled = [t.abs() / t.abs().max() if t.abs().max() > 0 else t.abs()
                  for t in (a[i], b[i])]
        out["ssim"] += float(structural_similarity_index_measure(
            scaled[1][None, None], scaled[0][None, None], data_range=1.0))
    return {m: v / a.shape[0] for m, v in out.items()}


def sanity_rows(dv, torch, repeats: int, which=("default", "4")):
    from deconvviz.analyses import sanity

    model = dv.load_model("vgg16", weights=None)
    x, _ = dv.load_image(os.path.join(HERE, "examples", "images", "chelsea.png"), model)
    now = sanity._scores

    def before(methods):
        sanity._scores = _scores_before
        try:
            return dv.sanity_check(model, x, methods=methods, reuse=False)
        finally:
            sanity._scores = now
    rows = []
    sets = {"default": ("default (7)", None),
            "4": ("4: deconvnet, guided, gradient, gradcam",
                  ["deconvnet", "guided", "gradient", "gradcam"])}
    for label, methods in (sets[w] for w in which):
        runs = {"before": lambda m=methods: before(m),
                "plain": lambda m=methods: dv.sanity_check(model, x, methods=m, reuse=False),
                "reused": lambda m=methods: dv.sanity_check(model, x, methods=m)}
        times, results = {k: [] for k in runs}, {}
        for _ in range(repeats):
            for key, fn in runs.items():
                seconds, _, results[key] = measured(fn)
                times[key].append(seconds)
        first, last = results["before"], results["reused"]
        map_diff = max(float(((first.maps[m] - last.maps[m]).abs()
                              / first.maps[m].abs().flatten(2).amax(2)[..., None, None, None]
                              .clamp_min(1e-30)).max()) for m in first.methods)
        score_diff = max(abs(p - q) for m in first.methods for k in first.scores[m]
                         for p, q in zip(first.scores[m][k], last.scores[m][k]))
        t = {k: min(v) for k, v in times.items()}
        rows.append((label, t["before"], t["plain"], t["reused"], map_diff, score_diff))
        print(f"| {label} | {t['before']:.1f} | {t['plain']:.1f} | {t['reused']:.1f} | "
              f"{t['before'] / t['reused']:.2f}x | {t['plain'] / t['reused']:.2f}x | "
              f"{map_diff:.1g} | {score_diff:.1g} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="vgg16:48:8,vgg16:16:8,resnet50:48:8")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="also draw the changed window per layer (VGG16) into PNG")
    parser.add_argument("--sanity", action="store_true",
                        help="time the sanity check's cascade (before, plain, reused) instead")
    parser.add_argument("--sanity-methods", default="default,4",
                        help="with --sanity: 'default' (its 7 methods), '4' (deconvnet, "
                             "guided, gradient, Grad-CAM) or both")
    args = parser.parse_args()
    import torch

    import deconvviz as dv

    torch.set_num_threads(args.threads)
    if args.sanity:
        print("| VGG16 sanity check, methods | before s | plain s | reused s | before / reused "
              "| plain / reused | max map diff | max score diff |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        sanity_rows(dv, torch, args.repeats, args.sanity_methods.split(","))
        return
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
