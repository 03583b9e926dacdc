"""The vocabularies users choose from, checked before any model is loaded.

Modes, display scalings and feature lists are parsed here, without importing torch, so that
the command line rejects a bad choice at once (the methods: :mod:`deconvviz.method_table`).
"""
from __future__ import annotations

from typing import List

from .errors import ArgumentError, UnknownPrecisionError

__all__ = ["MODES", "SCALINGS", "TILE_SCALINGS", "TRANSFORMS", "INITS", "PAPER_SAVE_AT", "MAX_TOP",
           "PRECISIONS", "check_precision",
           "parse_list", "parse_features", "choose_features", "check_mode",
           "check_scaling", "weights_label"]

MODES = ("max", "map")
SCALINGS = ("signed", "shared", "paper", "heatmap")
TILE_SCALINGS = ("signed", "paper", "heatmap")  # one tile at a time (the atlas): no shared scale
TRANSFORMS = ("translate", "scale", "rotate")  # dv.invariance's
INITS = ("auto", "normal", "kaiming")  # dv.train's weight initialisations
PAPER_SAVE_AT = (1, 2, 5, 10, 20, 30, 40, 64)  # Zeiler & Fergus Fig. 4's epochs
# How deconvviz computes (deconvviz.engine.precision): "exact" is float32 throughout (TF32 off);
# "tf32" lets cuDNN and cuBLAS use TensorFloat-32 on GPUs that have it (faster, not exact).
PRECISIONS = ("exact", "tf32")
MAX_TOP = 64  # features in one grid; more is unreadable (use --features for a chosen set)
FV_OBJECTIVES = ("channel", "neuron", "direction", "logit")  # dv.feature_vis's objectives
FV_PARAMETRISATIONS = ("fourier", "pixel")  # and its image parametrisations


def weights_label(weights: str) -> str:
    """How a figure or table names the weights that drew it: ``untrained weights``
    (random), ``ImageNet weights``, ``the model's own weights`` (a user's model) or the
    checkpoint's file name."""
    import os

    if weights == "random":
        return "untrained weights"
    if weights == "imagenet":
        return "ImageNet weights"
    if weights == "pretrained":  # a timm model's default
        return "timm's pretrained weights"
    if weights == "user":
        return "the model's own weights"
    return f"weights {os.path.basename(weights)}"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UnknownPrecisionError(f"unknown precision {precision!r}; choose one of "
                                    f"{', '.join(PRECISIONS)}")
    return precision


def check_scaling(scaling: str) -> str:
    if scaling not in SCALINGS:
        raise ArgumentError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    return scaling


def parse_list(text: str, what: str = "list") -> List[str]:
    """``"conv1, conv3"`` -> ``["conv1", "conv3"]``: items stripped of spaces; an empty
    item (``"a,,b"``, ``""``) is refused, naming ``what`` (e.g. ``"--layer"``)."""
    items = [item.strip() for item in str(text).split(",")]
    if not all(items):
        raise ArgumentError(f"{what} {text!r} has an empty item; give names separated by "
                            f"commas, e.g. conv1,conv3")
    return items


def parse_features(spec: str, names: bool = False) -> list:
    """``"3,17,40-47"`` -> ``[3, 17, 40, ..., 47]``; with ``names`` (a logit objective's
    classes), an item that is not a number is kept as a class name (``"281,tabby"``)."""
    out: list = []
    for part in str(spec).split(","):
        part = part.strip()
        if names and part and not part.replace("-", "").isdigit():
            out.append(part)
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                out.extend(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ArgumentError(f"bad feature list {spec!r}: use indices and ranges like "
                                f"3,17,40-47") from None
    return out


def choose_features(spec: str, channels: int, *, seed: int = 0) -> List[int]:
    """``"0-15"``, ``"3,7"`` or ``"random:16"`` (a seeded random subset, sorted)."""
    if str(spec).startswith("random:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError:
            raise ArgumentError(f"bad feature choice {spec!r}: use random:N") from None
        import torch  # the subset is torch's seeded permutation, as in earlier releases

        if not 1 <= count <= channels:
            raise ArgumentError(f"random:{count} asks for {count} of the layer's {channels} "
                                f"features; use random:1 to random:{channels}, or 0-{channels - 1}"
                                f" for all of them")
        generator = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(channels, generator=generator)[:count].tolist())
    features = parse_features(spec)
    bad = [f for f in features if not 0 <= f < channels]
    if bad:
        raise ArgumentError(f"feature {bad[0]} is out of range: valid features are 0 to "
                            f"{channels - 1}")
    return features
