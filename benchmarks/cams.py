"""Score-CAM and Ablation-CAM against pytorch-grad-cam and against their own floors, on the
CPU, interleaved in one process (issue 36).

- Score-CAM runs the whole model once per channel (each masked input differs everywhere):
  its floor is those forward passes, timed bare (the same batches, no masks built).
- Ablation-CAM needs only the layers above its layer: deconvviz runs that tail from the
  layer's recorded activations; pytorch-grad-cam runs the whole model for every batch of
  ablations. The multiply-add bound is (whole model) / (tail) per ablation.

Usage: python benchmarks/cams.py [--size 112] [--repeats 2] [--models vgg16,resnet50]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import deconvviz as dv  # noqa: E402
from deconvviz.analyses.cams import ablation_tail, cam_maps  # noqa: E402
from deconvviz.engine.passes.graph import trace  # noqa: E402

LAYERS = {"vgg16": "features.29", "resnet50": "layer4"}


def macs(module, x) -> int:
    """Multiply-adds of convolutions and linear layers in one forward pass of ``x``."""
    total = [0]

    def count(m, inputs, output):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += output.numel() * m.in_channels // m.groups * m.kernel_size[0] * \
                m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total[0] += output.numel() * m.in_features
    handles = [m.register_forward_hook(count) for m in module.modules()]
    try:
        with torch.no_grad():
            module(*x) if isinstance(x, tuple) else module(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(name, size, repeats, batch_size=32):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = dv.load_model(name, weights=None)
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    net = dv.Deconvnet(model)
    node = net.traced.ops[net.layer(LAYERS[name], (size, size)).node].node.name
    graph_module = trace(model).graph_module
    layers = [(model.get_submodule(LAYERS[name]), node)]
    rows = []
    for method, theirs_class in (("ablationcam", pgc.AblationCAM), ("scorecam", pgc.ScoreCAM)):
        def ours(method=method):
            return cam_maps(model, x, method, layers, classes, traced_module=graph_module,
                            batch_size=batch_size)

        def theirs(theirs_class=theirs_class):
            with theirs_class(model=model, target_layers=[layers[0][0]]) as cam:
                cam.batch_size = batch_size
                return torch.from_numpy(cam(input_tensor=x, targets=[
                    ClassifierOutputTarget(c) for c in classes]))

        t_ours, m_ours = timed(ours, repeats)
        t_theirs, m_theirs = timed(theirs, repeats)
        diff = float((m_ours[:, 0] - m_theirs).abs().max())
        rows.append((name, method, t_ours, t_theirs, diff))
    channels = net.layer(LAYERS[name], (size, size)).shape[0]
    with torch.no_grad():  # Score-CAM's floor: the masked passes, bare
        batch = x.repeat(batch_size, 1, 1, 1)

        def bare():
            with torch.no_grad():
                for k0 in range(0, channels, batch_size):
                    model(batch[:min(batch_size, channels - k0)])
        t_bare, _ = timed(bare, repeats)
    tail, frontier = ablation_tail(graph_module, node)
    whole = macs(model, x)
    with torch.no_grad():
        act = net.record(x, LAYERS[name]).activations[LAYERS[name]]
    tail_macs = macs(tail, tuple([act] + [None] * 0)) if len(frontier) == 1 else None
    return rows, t_bare, whole, tail_macs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="vgg16,resnet50")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    print(f"CPU, {torch.get_num_threads()} threads, {args.size} px, best of {args.repeats}, "
          f"1 image")
    print("| model | method | deconvviz s | pytorch-grad-cam s | speed-up | max diff | "
          "floor s | x floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        rows, t_bare, whole, tail = run(name, args.size, args.repeats)
        for model, method, t_ours, t_theirs, diff in rows:
            floor = f"{t_bare:.2f}" if method == "scorecam" else "-"
            ratio = f"{t_ours / t_bare:.2f}" if method == "scorecam" else "-"
            print(f"| {model} | {method} | {t_ours:.2f} | {t_theirs:.2f} | "
                  f"{t_theirs / t_ours:.1f}x | {diff:.1e} | {floor} | {ratio} |")
        if tail:
            print(f"| {name} | ablation multiply-add bound | | | {whole / tail:.0f}x "
                  f"(whole {whole / 1e9:.2f} G, tail {tail / 1e6:.1f} M per ablation) | | | |")


if __name__ == "__main__":
    main()
