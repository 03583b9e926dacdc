"""The evaluation's perturbation metrics against the forward passes they need, Quantus's pixel
flipping and pytorch-grad-cam's per-image ROAD, interleaved in one process.

Run by hand:

    .venv/bin/python benchmarks/evaluate.py [--models vgg16,resnet50] [--images 16]
        [--size 224] [--batch 16] [--threads 1] [--repeats 1] [--metrics LIST]

For each model (random weights) on 16 images (the four bundled photos, each as it is and
flipped left-right, upside down and both), the gradient's maps of each image's top-1 class,
computed once; then for each perturbation metric (faithfulness and confidence families):

- **bare**: the forward passes the metric reports (``Score.forward_passes``: images x steps,
  its physical floor) run as plain batched forward passes of the model (``--batch``), timed
  right before the metric, so that a load on the machine falls on both;
- **deconvviz**: ``compute(metric, inputs)``, as ``dv.evaluate`` runs it; the ratio to bare
  is the issue's target (<= 1.25x; region perturbation and IROF, whose steps each change
  one region, <= 0.5x, by the incremental forward);
- **peer**: Quantus 0.6's ``PixelFlipping`` on the same images, maps, classes and steps
  (black baseline) beside deconvviz's pixel flipping; pytorch-grad-cam's
  ``ROADMostRelevantFirstAverage`` (the paper's noisy linear imputation, one sparse solve
  per image on the CPU) beside deconvviz's ROAD (MoRF), at the same percentages.

Prints one Markdown table; each time is the fastest of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import os
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# local perturbations, the incremental forward's cases (the confidence metrics' masks are
# not local: the map scaled to [0, 1] multiplies every pixel, so they stay at <= 1.25x)
LOCAL = {"region_perturbation_morf", "region_perturbation_lerf", "irof"}


def images(dv, torch, name: str, count: int, size: int):
    """``count`` images at ``size`` px: the bundled photos and their flips."""
    from deconvviz.data.zoo import Preprocessing

    folder = os.path.join(HERE, "examples", "images")
    prep = Preprocessing(resize_size=size * 256 // 224, crop_size=size)
    photos = [dv.load_image(os.path.join(folder, f), preprocessing=prep)[0]
              for f in sorted(os.listdir(folder)) if f.endswith((".png", ".jpg"))]
    flips = [lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.flip(-1, -2)]
    batch = [flip(p) for flip in flips for p in photos]
    return torch.cat(batch[:count])


def fastest(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bare(torch, model, x, count: int, batch: int) -> None:
    """``count`` images' plain forward passes in batches of ``batch``."""
    with torch.no_grad():
        done = 0
        while done < count:
            n = min(batch, count - done)
            model(x[torch.arange(done, done + n) % x.shape[0]])
            done += n


def quantus_pixel_flipping(torch, model, x, maps, targets, steps: int):
    import quantus

    pixels = x.shape[-1] * x.shape[-2]
    metric = quantus.PixelFlipping(features_in_step=pixels // steps, perturb_baseline="black",
                                   disable_warnings=True, display_progressbar=False)
    return metric(model=model, x_batch=x.numpy(), y_batch=targets.numpy(),
                  a_batch=maps.sum(1, keepdim=True).numpy(), channel_first=True,
                  device="cpu", batch_size=x.shape[0])


def gradcam_road(torch, model, x, maps, targets, percentages):
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    metric = ROADMostRelevantFirstAverage(percentiles=list(percentages))
    return metric(x, maps.sum(1).numpy(), [ClassifierOutputSoftmaxTarget(int(t))
                                          for t in targets], model)


def region_floor(torch, model, size: int, patch: int) -> float:
    """The multiply-adds an exact incremental method must recompute for one ``patch``-px
    region, over the region grid, as a share of a full pass's
    (``IncrementalForward.cost``'s minimum): region perturbation's floor."""
    from deconvviz.analyses.evaluation.regions import region_grid
    from deconvviz.engine.passes.graph import trace
    from deconvviz.engine.passes.incremental import IncrementalForward

    traced = trace(model)
    out = traced.output_node.args[0] if traced.output_node.op == "output" else \
        traced.output_node
    forward = IncrementalForward(traced, [out.name])
    forward.set_base(torch.zeros(1, 3, size, size))
    start = region_grid(size, patch)
    grid = [min(max(start + k * patch, 0), size - patch) for k in range(-(-size // patch))]
    ys = [y for y in grid for _ in grid]
    xs = [x for _ in grid for x in grid]
    cost = forward.cost(ys, xs, (patch, patch), 16)
    return cost["minimum"] / cost["full"]


def one_metric(torch, model, x, maps, targets, metric: str, args) -> tuple:
    """One row: the metric's forward passes, bare and deconvviz's times, and its peer's."""
    from deconvviz import metric_table
    from deconvviz.analyses.evaluation import Inputs, compute

    params = dict(metric_table.get(metric).params)
    if metric == "pixel_flipping":
        params["steps"] = args.steps
    params.update(args.params.get(metric, {}))

    def ours():
        inputs = Inputs(model, x, maps, targets, batch_size=args.batch,
                        generator=torch.Generator().manual_seed(0))
        return compute(metric, inputs, **params)

    ours_s, score = fastest(ours, args.repeats)
    bare_s, _ = fastest(lambda: bare(torch, model, x, score.forward_passes, args.batch),
                        args.repeats)
    ours_s = min(ours_s, fastest(ours, args.repeats)[0])  # once more, after bare
    peer = ""
    if metric == "pixel_flipping" and not args.no_peers:
        peer_s, _ = fastest(lambda: quantus_pixel_flipping(
            torch, model, x, maps, targets, args.steps), args.repeats)
        peer = f"Quantus {peer_s:.2f} s ({peer_s / ours_s:.2f}x deconvviz's)"
    if metric == "road_morf" and not args.no_peers:
        peer_s, _ = fastest(lambda: gradcam_road(torch, model, x, maps, targets,
                                                 params["percentages"]), args.repeats)
        peer = f"grad-cam per image {peer_s:.2f} s ({peer_s / ours_s:.2f}x deconvviz's)"
    if metric.startswith("region_perturbation"):
        floor = region_floor(torch, model, x.shape[-1], params["patch_size"])
        peer = f"floor {floor:.3f}x (the multiply-adds a region reaches)"
    return (score.forward_passes, f"{bare_s:.2f}", f"{ours_s:.2f}",
            f"{ours_s / bare_s:.2f}x" if bare_s > 0 else "-",
            "<= 0.5x" if metric in LOCAL else "<= 1.25x", peer)


def case(dv, torch, name: str, args) -> None:
    from deconvviz.analyses.evaluation import registered

    model = dv.load_model(name, weights=None)
    x = images(dv, torch, name, args.images, args.size)
    maps = dv.attribute(model, x, method="gradient").map.detach()
    with torch.no_grad():
        targets = model(x).argmax(1)
    for metric in args.metrics:
        try:
            registered(metric)
        except dv.ArgumentError:
            print(f"| {name} | {metric} | not implemented on this branch |||||")
            continue
        row = one_metric(torch, model, x, maps, targets, metric, args)
        print("|", " | ".join(str(c) for c in (name, metric, *row)), "|", flush=True)


def parse_params(given) -> dict:
    """``["deletion.steps=16", ...]`` -> ``{"deletion": {"steps": 16}}``."""
    import ast

    out: dict = {}
    for item in given:
        key, _, value = item.partition("=")
        metric, _, name = key.partition(".")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        out.setdefault(metric, {})[name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16, help="pixel flipping's steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--metrics", default=None, help="comma list [default: the "
                                                       "faithfulness and confidence families]")
    parser.add_argument("--no-peers", action="store_true", help="skip Quantus and grad-cam")
    parser.add_argument("--param", action="append", default=[], metavar="METRIC.KEY=VALUE",
                        help="a metric's parameter (repeatable), e.g. deletion.steps=16")
    args = parser.parse_args()
    args.params = parse_params(args.param)
    import torch

    import deconvviz as dv
    from deconvviz import metric_table

    torch.set_num_threads(args.threads)
    args.metrics = (args.metrics.split(",") if args.metrics else
                    metric_table.names("faithfulness") + metric_table.names("confidence"))
    print(f"{args.images} images of {args.size} px, batch {args.batch}, {args.threads} "
          f"thread(s), random weights, the gradient's maps, parameters changed from the "
          f"papers': {args.params or 'none'}\n")
    print("| model | metric | forward passes | bare s | deconvviz s | deconvviz / bare | "
          "target | peer |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for name in args.models.split(","):
        case(dv, torch, name, args)


if __name__ == "__main__":
    main()
