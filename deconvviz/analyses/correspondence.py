"""Correspondence, Zeiler & Fergus Table 1: does hiding the same part of several images of one
kind of object change the representation in the same way?

For layer l, image i and a part, ε_i = a_l(x_i) − a_l(x̃_i) is the change of the flattened
activations when the part's box is masked (filled with the preprocessing's mean colour: 0 in
the normalised input). Δ_l is the mean, over ordered pairs i ≠ j, of the normalised Hamming
distance between sign(ε_i) and sign(ε_j). (The paper writes the sum; the mean lets layers and
image counts compare.) A lower Δ means the part changes the representation the same way
across images. The random baseline masks, in every image, a box of the part's size at one
random location shared by all images; ``random`` seeded draws give its mean and standard
deviation, as the paper's "Random" row.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import weights_label
from ..data.images import ImagesArg, load_image
from ..data.zoo import model_info, model_name
from ..engine import Deconvnet
from ..engine.guard import runs_model
from ..engine.passes.recording import forward_to, images_for
from ..errors import ArgumentError
from ..results import Result, csv_columns
from .invariance import default_probe_layers

__all__ = ["CorrespondenceResult", "PartBoxes", "correspondence", "check_parts", "hamming_delta",
           "parts_figure"]

Box = Tuple[int, int, int, int]  # x, y, w, h in the pixels of the crop the model sees


def check_parts(parts: Mapping[str, Sequence[Sequence[int]]], count: int,
                size: Tuple[int, int]) -> Dict[str, List[Box]]:
    """Boxes ``[x, y, w, h]``, one per image for every part, inside the image."""
    if not isinstance(parts, Mapping) or not parts:
        raise ArgumentError('parts must be a dict {"part": [[x, y, w, h], ...], ...}')
    height, width = size
    out = {}
    for part, boxes in parts.items():
        boxes = list(boxes)
        if len(boxes) != count:
            raise ArgumentError(f"part {part!r} has {len(boxes)} box(es) for {count} images; "
                                f"give one [x, y, w, h] per image, in the images' order")
        checked = []
        for i, box in enumerate(boxes):
            if len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
                raise ArgumentError(f"part {part!r}, image {i}: a box is [x, y, w, h], got "
                                    f"{box!r}")
            x, y, w, h = (int(v) for v in box)
            if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
                raise ArgumentError(f"part {part!r}, image {i}: box {[x, y, w, h]} is not "
                                    f"inside the {width}x{height} crop the model sees")
            checked.append((x, y, w, h))
        out[part] = checked
    return out


def hamming_delta(changes: Tensor) -> float:
    """Δ of ``[N, D]`` activation changes: the mean over ordered pairs i ≠ j of the fraction
    of positions where sign(ε_i) and sign(ε_j) differ."""
    signs = torch.sign(changes)
    n = signs.shape[0]
    if n < 2:
        raise ArgumentError("correspondence needs at least two images")
    differ = (signs[:, None, :] != signs[None, :, :]).float().mean(dim=2)
    return float(differ.sum() / (n * (n - 1)))  # the diagonal is 0


def _masked(x: Tensor, boxes: Sequence[Box]) -> Tensor:
    out = x.clone()
    for i, (bx, by, w, h) in enumerate(boxes):
        out[i, :, by:by + h, bx:bx + w] = 0
    return out


@dataclass
class CorrespondenceResult(Result):
    """The outcome of :func:`correspondence`.

    Attributes:
        delta: part -> layer -> Δ.
        random: part -> layer -> (mean, std) of the random baseline.
        layers, parts: the table's columns and rows; boxes: part -> one box per image.
        rgb: the crops the model saw.
    """

    kind: ClassVar[str] = "correspondence"

    delta: Dict[str, Dict[str, float]]
    random: Dict[str, Dict[str, Tuple[float, float]]]
    layers: List[str]
    parts: List[str]
    boxes: Dict[str, List[Box]]
    rgb: List[np.ndarray]
    draws: int
    model: str
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path

    def _table(self):
        """The table as columns (``to_dict``/``to_csv``)."""
        return csv_columns(self.table("csv"))

    def table(self, fmt: str = "markdown") -> str:
        """The table (parts x layers, "Δ" and the random baseline's "mean ± std") as
        ``markdown``, ``csv`` or ``latex``, with a last line (a comment in CSV and LaTeX)
        naming the model and its weights."""
        caption = f"{self.model}, {weights_label(self.weights)}"
        rows = [[part] + [f"{self.delta[part][l]:.4f}" for l in self.layers]
                + [f"{self.random[part][l][0]:.4f} ± {self.random[part][l][1]:.4f}"
                   for l in self.layers] for part in self.parts]
        head = ["part"] + [f"Δ {l}" for l in self.layers] + \
            [f"random {l} (mean ± std, {self.draws} draws)" for l in self.layers]
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["part"] + [f"delta_{l}" for l in self.layers]
                            + [f"random_mean_{l}" for l in self.layers]
                            + [f"random_std_{l}" for l in self.layers])
            for part in self.parts:
                writer.writerow([part] + [f"{self.delta[part][l]:.6g}" for l in self.layers]
                                + [f"{self.random[part][l][0]:.6g}" for l in self.layers]
                                + [f"{self.random[part][l][1]:.6g}" for l in self.layers])
            return buffer.getvalue() + f"# {caption}\n"
        if fmt == "latex":
            spec = "l" + "r" * (len(head) - 1)
            lines = [f"\\begin{{tabular}}{{{spec}}}", " & ".join(
                h.replace("±", "$\\pm$").replace("_", "\\_") for h in head) + r" \\",
                "\\hline"]
            lines += [" & ".join(c.replace("±", "$\\pm$").replace("_", "\\_") for c in row)
                      + r" \\" for row in rows]
            return "\n".join(lines + ["\\end{tabular}", f"% {caption}"]) + "\n"
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines + ["", f"*{caption}*"]) + "\n"

    def figure(self, *, fig=None):
        """The images with each part's box drawn, to check the boxes."""
        return figures.correspondence_figure(self, fig=fig)

    def _save_data(self, path: str, ext: str) -> str:
        text = self.table({".md": "markdown", ".csv": "csv", ".tex": "latex"}[ext]).encode()
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        return self.table()


@dataclass
class PartBoxes:
    """The crops a model sees and the parts' boxes on them: what the boxes' figure draws,
    without running the model (``weights`` is ``None``: none were used)."""

    rgb: List[np.ndarray]
    parts: List[str]
    boxes: Dict[str, List[Tuple[int, int, int, int]]]
    model: str
    weights: Optional[str] = None

    def figure(self, *, fig=None):
        return figures.correspondence_figure(self, fig=fig)


def parts_figure(model: Union[str, nn.Module], images: Sequence[str],
                 parts: Mapping[str, Sequence[Sequence[int]]]):
    """The boxes of ``parts`` drawn on the crops ``model`` sees of ``images``, to check them
    before the analysis: only the images are read (with the model's preprocessing)."""
    rgb = [load_image(path, model)[1] for path in images]
    if len(rgb) < 2:
        raise ArgumentError("correspondence needs at least two images")
    boxes = check_parts(parts, len(rgb), rgb[0].shape[:2])
    name = model if isinstance(model, str) else model_name(model)
    return PartBoxes(rgb, list(boxes), boxes, name).figure()


@api(renamed={"x": "images"}, legacy=("parts", "layers", "random", "seed"))
@runs_model
def correspondence(model: nn.Module, images: ImagesArg, *,
                   parts: Mapping[str, Sequence[Sequence[int]]],
                   layers: Optional[Sequence[str]] = None, random: int = 10,
                   seed: int = 0, progress: ProgressArg = True, device: Optional[str] = None,
                   precision: Optional[str] = None) -> CorrespondenceResult:
    """Zeiler & Fergus Table 1 (see the module docstring).

    Args:
        model: the network.
        images: the images of one kind of object (N >= 2), in any form of the glossary
            (docs/api.md).
        parts: ``{"right_eye": [[x, y, w, h], ...], ...}``: one box per image and part, in
            the pixels of the crop the model sees.
        layers: the layers (default: the first convolutional and the last hidden
            fully-connected layer).
        random: draws of the random baseline; seed: their seed.
        progress: ``True`` (a bar on stderr, counting masked batches), ``False``, or
            ``progress(done, total, label)``.
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Each masking runs as its own batch of the N images, the reference's batch size: the
    measure is the sign of each activation's change, and an activation the mask cannot
    reach must change by exactly 0, which only the same batch shape guarantees (another
    batch size may pick another kernel, with other last bits). So masks are not stacked
    into larger batches.
    """
    x, rgb, _ = images_for(model, images)
    n, _, height, width = x.shape
    if n < 2:
        raise ArgumentError("correspondence needs at least two images")
    boxes = check_parts(parts, n, (height, width))
    if not isinstance(random, int) or random < 1:
        raise ArgumentError(f"random must be a positive number of draws, got {random!r}")
    net = Deconvnet(model)
    layers = list(layers) if layers is not None else default_probe_layers(net)
    run = forward_to(net.traced, [net.layer(l, (height, width)).node for l in layers],
                     (height, width))
    generator = torch.Generator().manual_seed(seed)

    def deltas(masked_boxes):
        with torch.no_grad():
            changes = [(a - m).flatten(1) for a, m in zip(reference, run(_masked(x, masked_boxes)))]
        return [hamming_delta(c) for c in changes]

    with torch.no_grad():
        reference = run(x)
    delta, baseline = {}, {}
    bar = progress_bar(progress, total=len(boxes) * (1 + random), unit="mask",
                       desc="correspondence")
    for part, part_boxes in boxes.items():
        delta[part] = dict(zip(layers, deltas(part_boxes)))
        bar.update(1)
        widest = max(w for _, _, w, _ in part_boxes)
        tallest = max(h for _, _, _, h in part_boxes)
        draws = []
        for _ in range(random):
            left = int(torch.randint(0, width - widest + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - tallest + 1, (1,), generator=generator))
            draws.append(deltas([(left, top, w, h) for _, _, w, h in part_boxes]))
            bar.update(1)
        values = np.asarray(draws)
        baseline[part] = {l: (float(values[:, k].mean()), float(values[:, k].std()))
                          for k, l in enumerate(layers)}
    bar.close()
    info = model_info(model)
    return CorrespondenceResult(delta, baseline, layers, list(boxes), boxes, rgb,
                                random, model_name(model),
        weights=info.weights if info else "user")
