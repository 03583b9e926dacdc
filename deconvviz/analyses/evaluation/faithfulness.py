"""Faithfulness by removing pixels: pixel flipping (Bach et al. 2015), region perturbation
(Samek et al. 2017), RISE's deletion and insertion (Petsiuk et al. 2018) and faithfulness
correlation (Bhatt et al. 2020).

Each removes pixels in the order of the map (:mod:`.perturbation`'s conventions: channels
summed, the largest first, ties in raster order) and runs every step's images in batches.
Region perturbation takes the incremental forward (:mod:`.regions`) where the model allows.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, content_key, metric
from .perturbation import Forward, auc, baseline_image, order, pearson, pixel_map
from .regions import region_curve

__all__ = ["pixel_flipping", "region_perturbation", "deletion", "insertion",
           "faithfulness_correlation", "rise_blur"]


def _positive(name: str, value, at_least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < at_least:
        raise ArgumentError(f"{name} is a whole number of at least {at_least}, got {value!r}")
    return value


def _ranks(inputs: Inputs, how: str) -> Tensor:
    """``[N, H*W]``: each pixel's place in the order of removal (0 first)."""
    ranked = order(pixel_map(inputs.maps).flatten(1), how)
    return torch.argsort(ranked, dim=1)


def _sweep(inputs: Inputs, ranks: Tensor, counts: List[int], start: Tensor, end: Tensor,
           output: str = "probability") -> Score:
    """The curve of ``counts[k]`` pixels (by ``ranks``) taken from ``end``, the others from
    ``start``; its area over the fraction of pixels, per image."""
    n, _, h, w = inputs.images.shape
    forward = Forward(inputs, output)
    ranks = ranks.view(n, 1, h, w).to(inputs.images.device)

    def build(count: int) -> Tensor:
        return torch.where(ranks < count, end, start)

    curve = forward.images(build, counts, inputs.targets)
    x = torch.tensor(counts, dtype=torch.float64) / (h * w)
    return Score(auc(curve, x), curve, x, forward.passes)


def _counts(pixels: int, steps: int) -> List[int]:
    """0, s, 2s, ... and every pixel last: s = ceil(pixels / steps) (torchcam's and
    Quantus's steps where ``steps`` divides the pixels)."""
    per = -(-pixels // _positive("steps", steps))
    return [*range(0, pixels, per), pixels]


@metric("pixel_flipping")
def pixel_flipping(inputs: Inputs, *, order: str = "morf", steps: int = 16,
                   baseline="black") -> Score:
    """The class probability as pixels are replaced by ``baseline``, most (``"morf"``) or
    least (``"lerf"``) relevant first, in ``steps`` equal steps; the curve starts with the
    unperturbed image; the score is its area over the fraction replaced."""
    n, _, h, w = inputs.images.shape
    base = baseline_image(inputs, baseline)
    return _sweep(inputs, _ranks(inputs, order), _counts(h * w, steps), inputs.images, base)


@metric("deletion")
def deletion(inputs: Inputs, *, steps: int = 224, substrate="black") -> Score:
    """RISE's deletion: the class probability as the most relevant pixels are set to the
    substrate (``"black"``: ``inputs.baseline``, else zero, as RISE's zeros of the
    normalised image), its area over the fraction deleted (lower is better)."""
    n, _, h, w = inputs.images.shape
    if substrate == "black" and inputs.baseline is None:
        substrate = "zero"
    base = baseline_image(inputs, substrate)
    return _sweep(inputs, _ranks(inputs, "morf"), _counts(h * w, steps), inputs.images, base)


def rise_blur(images: Tensor, kernel: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's insertion substrate: each channel convolved with ``gkern(kernel, sigma)`` (a
    delta filtered by scipy's ``gaussian_filter``, reflected at its borders), zero-padded."""
    from scipy.ndimage import gaussian_filter

    delta = torch.zeros(kernel, kernel, dtype=torch.float64).numpy()
    delta[kernel // 2, kernel // 2] = 1
    k = torch.from_numpy(gaussian_filter(delta, sigma)).to(images)
    c = images.shape[1]
    weight = k.expand(c, 1, kernel, kernel)
    return F.conv2d(images, weight, padding=kernel // 2, groups=c)


@metric("insertion")
def insertion(inputs: Inputs, *, steps: int = 224, substrate="blur", blur_kernel: int = 11,
              blur_sigma: float = 5.0) -> Score:
    """RISE's insertion: the class probability as the most relevant pixels of the image are
    put into the substrate (``"blur"``: RISE's blurred image; or a baseline name), its area
    over the fraction inserted (higher is better)."""
    n, _, h, w = inputs.images.shape
    start = (rise_blur(inputs.images, blur_kernel, blur_sigma) if substrate == "blur"
             else baseline_image(inputs, substrate))
    return _sweep(inputs, _ranks(inputs, "morf"), _counts(h * w, steps), start, inputs.images)


@metric("region_perturbation_morf", "region_perturbation_lerf")
def region_perturbation(inputs: Inputs, *, order: str = "morf", patch_size: int = 9,
                        regions: int = 100, baseline="uniform",
                        incremental=None) -> Score:
    """Samek et al.'s region perturbation: the grid of ``patch_size``-px regions (centred,
    as Quantus) replaced one more at a time by ``baseline`` in the order of the map's sum
    over each region. The curve is the class probability's drop from the unperturbed
    image after each of ``regions`` steps; the score is AOPC, the curve's sum over
    ``regions + 1`` (the step with nothing removed counts, as in the paper)."""
    _positive("patch_size", patch_size)
    _positive("regions", regions)
    return region_curve(inputs, order=order, patch_size=patch_size, regions=regions,
                        baseline=baseline, incremental=incremental)


def _subsets(n: int, pixels: int, runs: int, size: int, generator) -> Tensor:
    """``[N, runs, size]`` random pixel subsets (without replacement within a subset)."""
    keys = torch.rand(n, runs, pixels, generator=generator, dtype=torch.float64)
    return keys.argsort(dim=2)[:, :, :size]


@metric("faithfulness_correlation")
def faithfulness_correlation(inputs: Inputs, *, runs: int = 100, subset_size: int = 224,
                             baseline="black") -> Score:
    """Bhatt et al.: over ``runs`` random subsets of ``subset_size`` pixels, the Pearson
    correlation between the map's sum over the subset and the class logit's drop when the
    subset is replaced by ``baseline``. A map that is zero everywhere (or constant sums)
    scores 0. The drops do not depend on the map: with ``inputs.shared`` (the driver's, one
    per evaluation) they are run once for every method that meets the same draws."""
    _positive("runs", runs, 2)
    n, _, h, w = inputs.images.shape
    size = min(_positive("subset_size", subset_size), h * w)
    picks = _subsets(n, h * w, runs, size, inputs.generator)
    values = pixel_map(inputs.maps).flatten(1)
    sums = torch.gather(values[:, None].expand(n, runs, h * w), 2, picks).sum(dim=2)
    base = baseline_image(inputs, baseline)
    forward = Forward(inputs, "logit")
    device = inputs.images.device

    def build(run: int) -> Tensor:
        mask = torch.zeros(n, h * w, dtype=torch.bool)
        mask.scatter_(1, picks[:, run], True)
        return torch.where(mask.view(n, 1, h, w).to(device), base, inputs.images)

    def run() -> Tensor:
        y0 = forward(inputs.images, inputs.targets)
        return y0[:, None] - forward.images(build, list(range(runs)), inputs.targets)

    if inputs.shared is None:
        drops = run()
    else:  # the same images, classes, subsets and baseline: the same drops, for any map
        key = content_key("faithfulness_correlation", id(inputs.model), inputs.images,
                          inputs.targets, picks, base)
        if key not in inputs.shared:
            inputs.shared[key] = run()
        drops = inputs.shared[key]
    return Score(pearson(sums, drops), forward_passes=forward.passes)
