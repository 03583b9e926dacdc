"""Guided backprop at speed, Captum's errors on the zoo, and the cost of a sanity check.

    .venv/bin/python benchmarks/methods.py [--captum-sample 24] [--threads 2] [--parts ...] [--models ...]

1. Every feature of VGG16 conv4_3 (512) with guided backprop, mode max: deconvviz (one
   recorded forward pass, batched reverse passes in the receptive-field cone) against a loop
   of Captum's NeuronGuidedBackprop (one call per feature; timed on --captum-sample features
   and multiplied out, its time per feature being constant).
2. Captum's GuidedBackprop, Deconvolution and GuidedGradCam against deconvviz's exact
   methods, for the top-1 class of one photo, on every zoo model and on EfficientNet-B0,
   MobileNetV3-Small, ConvNeXt-Tiny (layer scales set to 1) and RegNetY-400MF (random
   weights): the largest relative difference, max |captum - exact| / max |exact|; and
   Captum's GuidedBackprop against the plain gradient.
3. A full sanity check of VGG16 (all 16 parametrised layers) with 4 methods (deconvnet,
   guided, gradient, gradcam) on one 224x224 photo.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import deconvviz as dv
from deconvviz.analyses.attribution import default_cam_layer

PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                     "images", "chelsea.png")


def rel(a, b) -> float:
    from deconvviz.engine.precision import rel_error

    return rel_error(a, b)


def guided_speed(sample: int) -> None:
    from captum.attr import NeuronGuidedBackprop

    model = dv.load_model("vgg16", weights=None)
    x, _ = dv.load_image(PHOTO, model)
    net = dv.GuidedBackprop(model)
    act = net.record(x, "conv4_3").activations["conv4_3"][0]
    features = list(range(act.shape[0]))
    start = time.perf_counter()
    ours = net.project(x, "conv4_3", features=features)[0]
    deconvviz_s = time.perf_counter() - start
    captum = NeuronGuidedBackprop(model, model.get_submodule(net.aliases["conv4_3"]))
    chosen = features[:: max(1, len(features) // sample)][:sample]
    start = time.perf_counter()
    error = 0.0
    for f in chosen:
        y, xx = divmod(int(act[f].argmax()), act.shape[-1])
        theirs = captum.attribute(x, neuron_selector=(f, y, xx)) * float(act[f, y, xx])
        if act[f, y, xx] > 0:
            error = max(error, rel(theirs[0], ours[f]))
    captum_s = (time.perf_counter() - start) / len(chosen) * len(features)
    print("| model | layer | method | features | deconvviz s | Captum loop s | ratio | "
          "max rel. error |\n|---|---|---|---:|---:|---:|---:|---:|")
    print(f"| vgg16 | conv4_3 | guided | {len(features)} | {deconvviz_s:.2f} | {captum_s:.1f} | "
          f"{captum_s / deconvviz_s:.1f}x | {error:.1e} |")


# Today's CNNs, as the issue that brought their rules measured them (torchvision's names).
MODERN = ["torchvision:efficientnet_b0", "torchvision:mobilenet_v3_small",
          "torchvision:convnext_tiny", "torchvision:regnet_y_400mf"]


def _random_model(name: str):
    model = dv.load_model(name, weights=None)
    if "convnext" in name:
        # torchvision starts every block's layer scale at 1e-6, which hides the blocks (their
        # GELUs) behind the skip connections; trained scales are not small.
        with torch.no_grad():
            for key, p in model.named_parameters():
                if key.endswith("layer_scale"):
                    p.fill_(1.0)
    return model


def captum_errors(names) -> None:
    from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam

    print("\n| model | Captum GuidedBackprop | Captum Deconvolution | Captum GuidedGradCam | "
          "Captum GuidedBackprop vs the gradient |\n|---|---:|---:|---:|---:|")
    for name in names:
        model = _random_model(name)
        x, _ = dv.load_image(PHOTO, model)
        with torch.no_grad():
            top = int(model(x).argmax())
        guided = dv.attribute(model, x, method="guided", target=top).map
        deconv = dv.attribute(model, x, method="deconvnet", target=top).map
        ggc = dv.attribute(model, x, method="guided_gradcam", target=top).map
        cam_layer = dv.Gradient(model).layer(default_cam_layer(dv.Gradient(model))).path
        errors = [rel(GuidedBackprop(model).attribute(x, target=top), guided),
                  rel(Deconvolution(model).attribute(x, target=top), deconv),
                  # bilinear, as Selvaraju et al. upsample (Captum's default is nearest)
                  rel(GuidedGradCam(model, model.get_submodule(cam_layer)).attribute(
                      x, target=top, interpolate_mode="bilinear"), ggc),
                  # 0 where Captum's guided backprop is silently the plain gradient
                  rel(GuidedBackprop(model).attribute(x, target=top),
                      dv.attribute(model, x, method="gradient", target=top).map)]
        print(f"| {name} | " + " | ".join(f"{e:.2g}" for e in errors) + " |", flush=True)


def sanity_time() -> None:
    model = dv.load_model("vgg16", weights=None)
    x, _ = dv.load_image(PHOTO, model)
    start = time.perf_counter()
    result = dv.sanity_check(model, x, methods=["deconvnet", "guided", "gradient", "gradcam"])
    seconds = time.perf_counter() - start
    print(f"\nSanity check, VGG16, {len(result.steps) - 1} layers x 4 methods: {seconds:.1f} s")
    print(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captum-sample", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="speed,errors,sanity",
                        help="Comma list of speed, errors, sanity.")
    parser.add_argument("--models", default="zoo,modern",
                        help="Models of the Captum comparison: 'zoo', 'modern' (EfficientNet-B0, "
                             "MobileNetV3-Small, ConvNeXt-Tiny, RegNetY-400MF) or names.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    parts = args.parts.split(",")
    if "speed" in parts:
        guided_speed(args.captum_sample)
    if "errors" in parts:
        names = []
        for item in args.models.split(","):
            names += {"zoo": dv.list_models(), "modern": MODERN}.get(item, [item])
        captum_errors(names)
    if "sanity" in parts:
        sanity_time()


if __name__ == "__main__":
    main()
