"""LRP's conservation and agreement: deconvviz against zennit on the zoo.

    .venv/bin/python benchmarks/lrp_vs_zennit.py [--models vgg16,resnet50,googlenet,densenet121,zfnet]

Random weights, the chelsea photo at 224x224, relevance seeded with the top-1 logit, zennit's
EpsilonPlusFlat with its canonizer (VGGCanonizer, ResNetCanonizer, else
SequentialMergeBatchNorm) and deconvviz's ``lrp``. For each model: the input relevance over
the seeded logit (LRP's conservation) as the model is and with every bias (BatchNorm's shift
included) set to zero, and the largest difference between the two heatmaps relative to
zennit's largest value.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

import deconvviz as dv
from deconvviz.engine.precision import rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(ROOT, "examples", "images", "chelsea.png")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lrp_oracle import without_biases  # noqa: E402  (tests/lrp_oracle.py)


def zennit_lrp(model, x, seed, name):
    from zennit import torchvision as ztv
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    canonizer = (ztv.VGGCanonizer() if name.startswith("vgg") else ztv.ResNetCanonizer()
                 if name.startswith("resnet") else SequentialMergeBatchNorm())
    try:
        with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer])) as a:
            _, rel = a(x, seed)
        return rel, ""
    except RuntimeError as exc:
        return None, str(exc).splitlines()[0]


def row(name):
    model = dv.load_model(name, weights=None)
    x, _ = dv.load_image(PHOTO, model=model)
    cells = [name]
    for variant in (model, without_biases(copy.deepcopy(model))):
        with torch.no_grad():
            out = variant(x)
        top = int(out.argmax())
        seed = torch.zeros_like(out)
        seed[0, top] = out[0, top]
        ours = dv.attribute(variant, x, method="lrp").map
        theirs, error = zennit_lrp(variant, x, seed, name)
        logit = float(out[0, top])
        zen = f"{float(theirs.sum()) / logit:.3f}" if theirs is not None else f"fails: {error}"
        diff = (f"{rel_error(ours, theirs):.1e}"
                if theirs is not None else "-")
        cells += [zen, f"{float(ours.sum()) / logit:.3f}", diff]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,resnet50,googlenet,densenet121,zfnet")
    args = parser.parse_args()
    print("| model | zennit | deconvviz | max diff | zennit, biases 0 | deconvviz, biases 0 | "
          "max diff, biases 0 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        print("| " + " | ".join(row(name)) + " |", flush=True)


if __name__ == "__main__":
    main()
