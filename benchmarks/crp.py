"""CRP's conditional heatmaps of every channel of a layer, batched, against a loop of one
masked LRP pass per concept.

    .venv/bin/python benchmarks/crp.py [--size 64] [--sample 32] [--threads 2]

VGG16 (random weights), conv5_3 (512 channels), one image (the chelsea photo at --size):
``dv.crp`` with every channel (one forward pass, the LRP pass above the layer once, the part
below it for all 512 concepts in chunks, the rules' denominators computed once) against a
loop of ``dv.crp(..., concepts=[c])``: for each concept a forward pass and a whole LRP pass
with the layer's relevance masked to that channel. The loop's time per concept is constant,
so it is timed on --sample concepts spread over the layer and multiplied out; the two are
interleaved (loop, batched, loop) so that other jobs on the machine disturb both alike.
The batched heatmaps are checked against the loop's on the sample.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

import deconvviz as dv
from deconvviz.engine.precision import rel_error

PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                     "images", "chelsea.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sample", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = dv.load_model("vgg16", weights=None)
    pre = replace(dv.model_info(model).preprocessing, resize_size=args.size,
                  crop_size=args.size)
    x, _ = dv.load_image(PHOTO, model=model, preprocessing=pre)
    net = dv.Projector(model, method="lrp")
    channels = 512
    sample = list(range(0, channels, channels // args.sample))[:args.sample]
    dv.crp(net, x, layer="conv5_3", features=[0])  # warm-up

    def loop(part):
        t = time.perf_counter()
        maps = [dv.crp(net, x, layer="conv5_3", features=[c]).heatmaps for c in part]
        return (time.perf_counter() - t) / len(part), torch.cat(maps, dim=1)

    half = sample[: len(sample) // 2], sample[len(sample) // 2:]
    per_a, maps_a = loop(half[0])
    t = time.perf_counter()
    batched = dv.crp(net, x, layer="conv5_3")
    batched_s = time.perf_counter() - t
    per_b, maps_b = loop(half[1])
    loop_s = (per_a + per_b) / 2 * channels
    looped = torch.cat([maps_a, maps_b], dim=1)
    err = rel_error(batched.heatmaps[:, sample], looped)
    print("| model | layer | image | concepts | batched s | loop s (from "
          f"{len(sample)}) | ratio | max rel. difference |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    print(f"| vgg16 | conv5_3 | {args.size}x{args.size} | {channels} | {batched_s:.1f} | "
          f"{loop_s:.1f} | {loop_s / batched_s:.1f}x | {err:.1e} |")


if __name__ == "__main__":
    main()
