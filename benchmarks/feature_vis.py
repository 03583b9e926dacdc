"""Feature visualisation: every unit of a layer in one batch against a loop of one
optimisation per unit.

    .venv/bin/python benchmarks/feature_vis.py [--steps 4] [--repeats 1] [--threads 2]
                                               [--loop-sample 32]

All 256 units of ZFNet conv5 (random weights: the time does not depend on them), a 128-px
Fourier image seen by the model at 128 px, Lucid's transforms, the same steps on both sides:
``dv.feature_vis(model, "conv5", range(256))`` (batched, chunked under its memory budget)
against ``dv.feature_vis(model, "conv5", [u])`` for each unit. The two are timed interleaved
(batched, loop, batched, loop, ...) in one process, and the ratio of their medians printed,
so that other jobs on a shared machine slow both alike. A loop's time per unit is constant
(each call is the same work), so with ``--loop-sample N`` it is timed on the first N units
and multiplied out to all of them (as ``cone_vs_captum.py`` does for Captum's loop). Both give the same images up to
floating point (each image's start and transforms come from its unit's own seeded stream);
the largest difference is printed.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import deconvviz as dv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loop-sample", type=int, default=None,
                        help="time the loop on this many units and multiply out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--units", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dv.load_model("zfnet", weights=None)
    net = dv.Projector(model)
    options = dict(steps=args.steps, image_size=128, input_size=128, net=net)
    units = list(range(args.units))
    sample = units[:args.loop_sample] if args.loop_sample else units
    batched_s, loop_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        batched = dv.feature_vis(model, "conv5", features=units, **options)
        batched_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        looped = [dv.feature_vis(model, "conv5", features=[u], **options) for u in sample]
        loop_s.append((time.perf_counter() - start) * len(units) / len(sample))
        print(f"batched {batched_s[-1]:.1f} s, loop {loop_s[-1]:.1f} s", flush=True)
    diff = max(float((r.images[0] - batched.images[i]).abs().max())
               for i, r in enumerate(looped))
    b, l_ = statistics.median(batched_s), statistics.median(loop_s)
    timed = f"{len(sample)} timed, x{len(units) / len(sample):g}" if len(sample) < len(units) \
        else "all"
    print(f"\n| model | layer | units | px | steps | threads | batched s | loop s ({timed}) | "
          f"ratio | max image difference |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| zfnet | conv5 | {len(units)} | 128 | {args.steps} | {args.threads} | {b:.1f} | "
          f"{l_:.1f} | {l_ / b:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
