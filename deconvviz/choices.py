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
           "check_scaling", "weights_label", "check_weights", "where_computed",
           "check_feature_vis_options", "check_relevance_options"]

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


def check_feature_vis_options(objective: str, *, steps: int = 512, images_per_unit: int = 1,
                              image_size: int = 128, lr: float = 0.05, diversity: float = 0.0,
                              position=None, directions=None) -> None:
    """:func:`deconvviz.feature_vis`'s options that need no model, checked without torch:
    the objective, counts, a finite learning rate and diversity, and no option that would
    do nothing (a position without the neuron objective, directions without the direction
    one, diversity with one image per unit)."""
    import math

    if objective not in FV_OBJECTIVES:
        raise ArgumentError(f"unknown objective {objective!r}; choose from "
                            f"{', '.join(FV_OBJECTIVES)}")
    for name, value in (("steps", steps), ("images_per_unit", images_per_unit),
                        ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    if not (math.isfinite(lr) and math.isfinite(diversity)) or not lr > 0 or diversity < 0:
        raise ArgumentError(f"lr must be a finite number > 0 and diversity a finite number "
                            f">= 0, got {lr}, {diversity}")
    if position is not None and objective != "neuron":
        raise ArgumentError(f"position picks one neuron: give objective='neuron' with it "
                            f"(the {objective} objective has no position)")
    if directions is not None and objective != "direction":
        raise ArgumentError(f"directions are the direction objective's: give "
                            f"objective='direction' with them (not {objective!r})")
    if diversity and images_per_unit < 2:
        raise ArgumentError(f"diversity {diversity:g} compares a unit's images with each "
                            f"other: give images_per_unit=2 or more with it "
                            f"(--images-per-unit 2)")


def check_relevance_options(rank: str, relevance_target=None,
                            relevance_method: str = "lrp") -> None:
    """:func:`deconvviz.scan`'s relevance options only act with ``rank="relevance"``."""
    if rank != "relevance" and (relevance_target is not None or relevance_method != "lrp"):
        given = "relevance_target" if relevance_target is not None else "relevance_method"
        raise ArgumentError(f"{given} ranks images by relevance: give rank='relevance' with "
                            f"it (--rank relevance)")


def where_computed(device, precision) -> str:
    """How a title names where and how a result was computed: ``""`` on a CPU (whatever the
    precision: TF32 exists only on CUDA, so a CPU's answers are exact), ``"on cuda"``, and
    ``"on cuda, TF32, not exact"`` where TF32 was in force there."""
    if device in (None, "cpu"):
        return ""
    tf32 = precision not in (None, "exact") and str(device).startswith("cuda")
    return f"on {device}" + (f", {precision.upper()}, not exact" if tf32 else "")


def check_weights(weights) -> None:
    """Refuse, without torch, weights that cannot be a checkpoint: a path (anything but
    ``None``, ``"default"`` or ``"none"``) that is a folder (naming a checkpoint inside, a
    training run's last epoch first) or no file at all (:class:`WeightsError`)."""
    import os

    from .errors import WeightsError

    if weights is None or (isinstance(weights, str) and weights.lower() in ("default", "none")):
        return
    path = os.fspath(weights)
    if os.path.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
        epochs = [f for f in inside if f.startswith("epoch_")]
        if epochs:
            hint = (f"; it holds a training run: give one of its checkpoints, e.g. "
                    f"{os.path.join(path, epochs[-1])}")
        else:
            hint = f"; give one of its files, e.g. {os.path.join(path, inside[-1])}" \
                if inside else ""
        raise WeightsError(f"weights {path} is a folder, not a checkpoint file{hint}")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path} "
                           f"(use 'default', 'none' or the path of a checkpoint)")


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
