"""IROF: iterative removal of features (Rieger & Hansen 2020).

Each image is cut into superpixels by scikit-image's SLIC (``slic(image, n_segments,
start_label=0)`` on the model's input, channels last: Quantus's segmentation), the
superpixels are ordered by their mean relevance (largest first, ties by label) and replaced
by ``baseline`` one more at a time. The curve is the class probability relative to the
unperturbed image's, from 1 (nothing removed) to every superpixel removed, over the
fraction of superpixels removed; the score is the area over it (higher is better). SLIC
may cut an image of pure noise into one superpixel: its curve then has one step.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .perturbation import Forward, baseline_image, order, pixel_map

__all__ = ["irof", "superpixels"]


def superpixels(images: Tensor, segments: int) -> Tensor:
    """``[N, H, W]`` long: SLIC's labels of each image (0 to S-1)."""
    try:
        from skimage.segmentation import slic
    except ImportError as exc:  # pragma: no cover - scikit-image comes with the dev extras
        raise ArgumentError("IROF's superpixels need scikit-image (pip install "
                            "scikit-image)") from exc
    out = [slic(np.moveaxis(x.detach().double().cpu().numpy(), 0, -1), n_segments=segments,
                start_label=0) for x in images]
    return torch.from_numpy(np.stack(out)).long()


@metric("irof")
def irof(inputs: Inputs, *, segments: int = 100, baseline="mean",
         incremental: Optional[bool] = None) -> Score:
    """The area over the relative class probability as superpixels are removed in order of
    their mean relevance; a map that is zero everywhere removes them in label order. Each
    step changes one superpixel: on a CPU it runs on the incremental forward (only what the
    superpixel's box reaches is recomputed, :mod:`.chain_runner`), elsewhere as plain
    batched passes."""
    if not isinstance(segments, int) or segments < 2:
        raise ArgumentError(f"segments is a whole number of at least 2, got {segments!r}")
    x = inputs.images
    labels = superpixels(x, segments)
    values = pixel_map(inputs.maps)
    forward = Forward(inputs, "probability")
    base = baseline_image(inputs, baseline)
    step_of, counts = [], []  # per image: the step removing each pixel, the steps
    for lab, val in zip(labels, values):
        count = int(lab.max()) + 1
        means = torch.zeros(count, dtype=torch.float64).index_add_(0, lab.flatten(),
                                                                    val.flatten())
        means = means / torch.bincount(lab.flatten(), minlength=count).clamp_min(1)
        ranked = order(means[None], "morf")[0]
        step_of.append(torch.argsort(ranked)[lab])  # [H, W]
        counts.append(count)
    steps = torch.stack(step_of)  # [N, H, W]
    chain = None
    if incremental is not False:
        from .chain_runner import chain_for
        chain = chain_for(inputs, forward, strict=bool(incremental))
    if chain is not None:
        y0, got = chain.curve(lambda group, k: steps[group] == k, base, max(counts))
        forward.passes = len(counts) + sum(counts)  # the floor: each image's own steps
        scores = {(i, k): float(got[i, k]) for i, c in enumerate(counts) for k in range(c)}
    else:
        y0 = forward(x, inputs.targets)
        jobs = [(i, k) for i, c in enumerate(counts) for k in range(c)]
        device = x.device

        def build(chunk):
            masks = torch.stack([steps[i] <= k for i, k in chunk])[:, None].to(device)
            at = torch.tensor([i for i, _ in chunk], device=device)
            return torch.where(masks, base[at], x[at])

        scores = _run_jobs(forward, build, jobs, inputs.targets)
    per, curves = [], []
    for i, count in enumerate(counts):
        ratio = torch.cat([torch.ones(1, dtype=torch.float64),
                           torch.tensor([scores[(i, k)] for k in range(count)],
                                        dtype=torch.float64) / y0[i]])
        grid = torch.linspace(0, 1, ratio.shape[0], dtype=torch.float64)
        per.append(1 - torch.trapezoid(ratio, grid))
        curves.append(ratio)
    width = max(c.shape[0] for c in curves)
    curve = torch.stack([torch.cat([c, c[-1:].expand(width - c.shape[0])]) for c in curves])
    return Score(torch.stack(per), curve, None, forward.passes)


def _run_jobs(forward: Forward, build, jobs, targets: Tensor) -> dict:
    size = max(1, int(forward.inputs.batch_size))
    out = {}
    for k in range(0, len(jobs), size):
        chunk = jobs[k:k + size]
        got = forward(build(chunk), targets[[i for i, _ in chunk]])
        out.update(zip(chunk, got.tolist()))
        forward._tell(k + len(chunk), len(jobs))
    return out
