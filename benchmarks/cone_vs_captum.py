"""Projecting every feature of a layer: deconvviz against a loop of Captum's NeuronDeconvolution.

Run by hand (each measurement runs in its own process, so that peak memory is its own):

    .venv/bin/python benchmarks/cone_vs_captum.py [--captum-sample 24] [--threads 2]

For each case it projects the strongest activation (mode max) of every feature of a layer
for one 224x224 image, with deconvviz (one recorded forward pass, batched cone reverse
passes) and with Captum (one NeuronDeconvolution.attribute call per feature, seeded at the
same unit). Captum's time per feature is constant, so by default it is measured on
--captum-sample features and multiplied out (--captum-sample 0 runs every feature). The
outputs are checked to agree up to a positive scale (Captum seeds 1, deconvviz seeds the
activation's value) on the features Captum ran. Random weights: timings don't depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = [("vgg16", "conv3_3", "max"), ("vgg16", "conv4_3", "max"), ("vgg16", "conv5_3", "max"),
         ("vgg16", "conv4_3", "map"), ("zfnet", "conv3", "max"), ("resnet50", "layer3", "max")]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(model_name: str, layer: str, threads: int):
    import torch

    import deconvviz as dv

    torch.set_num_threads(threads)
    model = dv.load_model(model_name, weights=None)
    x, _ = dv.load_image(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "examples", "images", "chelsea.png"), model)
    return torch, dv, model, x


def run_deconvviz(model_name, layer, mode, threads) -> dict:
    torch, dv, model, x = setup(model_name, layer, threads)
    net = dv.Deconvnet(model)
    channels = net.record(x, layer).activations[layer].shape[1]
    start = time.perf_counter()
    out = net.project(x, layer, features=list(range(channels)), mode=mode)  # forward + reverse
    seconds = time.perf_counter() - start
    torch.save(out[0], os.environ["DECONVVIZ_BENCH_OUT"])
    return {"seconds": seconds, "features": channels, "peak_mb": peak_mb()}


def run_captum(model_name, layer, mode, threads, sample) -> dict:
    torch, dv, model, x = setup(model_name, layer, threads)
    from captum.attr import NeuronDeconvolution

    net = dv.Deconvnet(model)
    module = model.get_submodule(net.aliases[layer])
    captum = NeuronDeconvolution(model, module)
    channels = net.record(x, layer).activations[layer].shape[1]
    features = list(range(channels)) if sample == 0 else list(range(0, channels,
                                                                     max(1, channels // sample)))
    ours = torch.load(os.environ["DECONVVIZ_BENCH_OUT"])
    start = time.perf_counter()
    with torch.no_grad():
        act = net.record(x, layer).activations[layer][0]
    results = {}
    for f in features:
        if mode == "max":
            flat = int(act[f].argmax())
            selector = (f, flat // act.shape[-1], flat % act.shape[-1])
        else:
            weights = act[f].clone()
            selector = lambda out, f=f, w=weights: (out[:, f] * w).flatten(1).sum(1)  # noqa: E731
        results[f] = captum.attribute(x, neuron_selector=selector)[0].detach()
    seconds = time.perf_counter() - start
    worst = 0.0
    for f, theirs in results.items():
        value = float(act[f].max()) if mode == "max" else 1.0
        scale = theirs.abs().max()
        if scale > 0:
            worst = max(worst, float((ours[f] - value * theirs).abs().max() / (value * scale)))
    return {"seconds": seconds * channels / len(features), "measured": len(features),
            "features": channels, "peak_mb": peak_mb(), "rel_error": worst}


def child(args) -> None:
    if args.run == "deconvviz":
        result = run_deconvviz(args.model, args.layer, args.mode, args.threads)
    else:
        result = run_captum(args.model, args.layer, args.mode, args.threads, args.captum_sample)
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--captum-sample", type=int, default=24)
    ap.add_argument("--run", choices=["deconvviz", "captum"])
    ap.add_argument("--model")
    ap.add_argument("--layer")
    ap.add_argument("--mode")
    args = ap.parse_args()
    if args.run:
        return child(args)
    print(f"one 224x224 image, every feature of the layer, {args.threads} threads; Captum "
          f"timed on {args.captum_sample or 'all'} features per layer and scaled")
    print("| model | layer | mode | features | deconvviz s | Captum loop s | ratio | "
          "deconvviz peak MB | Captum peak MB | max rel. error |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".bench_projection.pt")
    env = dict(os.environ, DECONVVIZ_BENCH_OUT=out)
    for model, layer, mode in CASES:
        results = {}
        for impl in ["deconvviz", "captum"]:
            cmd = [sys.executable, __file__, "--run", impl, "--model", model, "--layer", layer,
                   "--mode", mode, "--threads", str(args.threads), "--captum-sample",
                   str(args.captum_sample)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        ours, theirs = results["deconvviz"], results["captum"]
        print(f"| {model} | {layer} | {mode} | {ours['features']} | {ours['seconds']:.2f} | "
              f"{theirs['seconds']:.1f} | {theirs['seconds'] / ours['seconds']:.1f}x | "
              f"{ours['peak_mb']:.0f} | {theirs['peak_mb']:.0f} | {theirs['rel_error']:.1e} |",
              flush=True)
    os.unlink(out)


if __name__ == "__main__":
    main()
