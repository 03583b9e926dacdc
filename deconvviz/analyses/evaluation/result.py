"""What :func:`deconvviz.evaluate` returns: every method scored by every metric on the same
images, as one table (mean, standard error, count), per-image scores and curves, and a figure.

The long table (one row per method and metric) is :meth:`EvaluationResult.to_dict` and
:meth:`~EvaluationResult.to_csv`; the wide one (a row per method, a column per metric, "mean
± standard error") is :meth:`~EvaluationResult.to_markdown` and
:meth:`~EvaluationResult.to_latex`. A method that cannot run on the model has its row, with
no score and the reason in ``note``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple

import numpy as np
from torch import Tensor

from ... import figures, method_table
from ..._io import write_atomically
from ...choices import weights_label
from ...results import Result

__all__ = ["EvaluationResult", "summarise"]

# LaTeX's spelling of what the tables write (pdflatex reads no Greek or superscripts)
_TEX = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
        ("^", r"\^{}"), ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"),
        ("–", "--"), ("ε", r"$\varepsilon$"), ("γ", r"$\gamma$"), ("α", r"$\alpha$"),
        ("β", r"$\beta$"), ("⁺", r"$^+$"), ("²", r"$^2$"))


def summarise(scores: Tensor) -> Tuple[float, float, int]:
    """``(mean, standard error, n)`` over the finite scores (the standard error is the
    sample standard deviation over ``sqrt(n)``; NaN for fewer than two scores)."""
    values = scores.double().flatten()
    values = values[values.isfinite()]
    n = int(values.numel())
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(values.mean())
    sem = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return mean, sem, n


@dataclass
class EvaluationResult(Result):
    """Every method scored by every metric on the same images.

    Attributes:
        methods: the methods asked for, in order (those that could not run included).
        metrics: the metrics, in order.
        scores: method -> metric -> ``[N]`` float64, one score per image.
        curves: method -> metric -> ``(curve [N, S], x [S])`` where the metric has a curve.
        forward_passes: method -> metric -> the images the model was run on.
        seconds: method -> ``"maps"`` or a metric -> seconds spent.
        not_applicable: method -> why it could not run on this model.
        images: each image's name (its path, or ``image K``).
        target: the class explained in each image (:class:`~deconvviz.analyses.attribution
            .Target`).
        maps: method -> ``[K, C, H, W]`` maps of the first images (for the figure).
        rgb: the crops of those images.
        model, weights: the model's name and weights (``"random"`` for random weights).
        metric_titles, higher_is_better: each metric's title and direction.
        params: metric -> the parameters given instead of its paper's defaults.
    """

    methods: List[str]
    metrics: List[str]
    scores: Dict[str, Dict[str, Tensor]]
    curves: Dict[str, Dict[str, Tuple[Tensor, Tensor]]]
    forward_passes: Dict[str, Dict[str, int]]
    seconds: Dict[str, Dict[str, float]]
    not_applicable: Dict[str, str]
    images: List[str]
    target: object
    maps: Dict[str, Tensor]
    rgb: List[np.ndarray]
    model: str
    weights: str = "user"
    metric_titles: Dict[str, str] = field(default_factory=dict)
    higher_is_better: Dict[str, bool] = field(default_factory=dict)
    params: Dict[str, dict] = field(default_factory=dict)
    titles: Dict[str, str] = field(default_factory=method_table.titles)
    display: Dict[str, str] = field(default_factory=method_table.displays)
    kind: ClassVar[str] = "evaluation"

    def summary(self, method: str, metric: str) -> Tuple[float, float, int]:
        """``(mean, standard error, n)`` of ``method`` under ``metric`` (NaNs and 0 where
        the method could not run)."""
        if method not in self.scores:
            return math.nan, math.nan, 0
        return summarise(self.scores[method][metric])

    def _table(self) -> Dict[str, list]:
        columns: Dict[str, list] = {k: [] for k in ("method", "metric", "mean", "sem", "n",
                                                     "higher_is_better", "forward_passes",
                                                     "seconds", "maps_seconds", "note")}
        for method in self.methods:
            for metric in self.metrics:
                mean, sem, n = self.summary(method, metric)
                for key, value in (("method", method), ("metric", metric), ("mean", mean),
                                   ("sem", sem), ("n", n),
                                   ("higher_is_better", self.higher_is_better.get(metric)),
                                   ("forward_passes", self.forward_passes.get(method, {})
                                    .get(metric, 0)),
                                   ("seconds", self.seconds.get(method, {})
                                    .get(metric, math.nan)),
                                   ("maps_seconds", self.seconds.get(method, {})
                                    .get("maps", math.nan)),
                                   ("note", self.not_applicable.get(method, ""))):
                    columns[key].append(value)
        return columns

    def per_image(self) -> Dict[str, list]:
        """Every image's score as columns ``image, method, metric, score``."""
        columns: Dict[str, list] = {"image": [], "method": [], "metric": [], "score": []}
        for method, by_metric in self.scores.items():
            for metric, values in by_metric.items():
                for name, value in zip(self.images, values.tolist()):
                    for key, item in zip(columns, (name, method, metric, value)):
                        columns[key].append(item)
        return columns

    def _best(self) -> Dict[str, Optional[str]]:
        best = {}
        for metric in self.metrics:
            means = {m: self.summary(m, metric)[0] for m in self.methods}
            finite = {m: v for m, v in means.items() if math.isfinite(v)}
            pick = max if self.higher_is_better.get(metric, True) else min
            top = pick(finite.values()) if len(finite) > 1 else None
            winners = [m for m, v in finite.items() if v == top]
            best[metric] = winners[0] if len(winners) == 1 else None  # a tie: no winner
        return best

    def _cells(self, method: str, bold) -> List[str]:
        best = self._best()
        cells = []
        for metric in self.metrics:
            if method in self.not_applicable:
                cells.append("n/a")
                continue
            mean, sem, _ = self.summary(method, metric)
            # significant digits: a random model's class probabilities are about 1e-3
            text = "–" if not math.isfinite(mean) else (
                f"{mean:.4g}" + (f" ± {sem:.2g}" if math.isfinite(sem) else ""))
            cells.append(bold(text) if best[metric] == method else text)
        return cells

    def _header(self) -> List[str]:
        return [f"{self.metric_titles.get(m, m)} "
                f"{'↑' if self.higher_is_better.get(m, True) else '↓'}" for m in self.metrics]

    def to_markdown(self) -> str:
        """The wide table in Markdown: a row per method, a column per metric ("mean ±
        standard error" over the images, the best in bold, ↑/↓ the better direction), and a
        note for each method that could not run."""
        lines = ["| method | " + " | ".join(self._header()) + " |",
                 "|---|" + "---:|" * len(self.metrics)]
        for method in self.methods:
            lines.append(f"| {self.titles.get(method, method)} | "
                         + " | ".join(self._cells(method, lambda t: f"**{t}**")) + " |")
        lines.append("")
        n = len(self.images)
        lines.append(f"{self.model} ({weights_label(self.weights)}), "
                     + (f"{n} images; mean ± standard error over the images." if n != 1 else
                        "1 image (no standard error)."))
        if self.changed():
            lines.append(f"Parameters other than the papers': {self.changed()}.")
        for method, why in self.not_applicable.items():
            lines.append(f"- {method}: n/a ({why})")
        return "\n".join(lines) + "\n"

    def changed(self) -> str:
        """The parameters given instead of the papers' defaults, as text (``""``: none)."""
        return "; ".join(f"{metric} " + ", ".join(f"{k}={v!r}" for k, v in given.items())
                         for metric, given in self.params.items() if given)

    def to_latex(self) -> str:
        """The wide table as a LaTeX ``tabular`` (booktabs rules), as in
        :meth:`to_markdown`."""
        def tex(text: str) -> str:
            for old, new in _TEX:
                text = text.replace(old, new)
            return text

        lines = [r"\begin{tabular}{l" + "r" * len(self.metrics) + "}", r"\toprule",
                 "method & " + " & ".join(tex(h) for h in self._header()) + r" \\",
                 r"\midrule"]
        for method in self.methods:
            cells = [tex(c) for c in self._cells(method, lambda t: f"@B{t}@E")]
            cells = [c.replace("@B", r"\textbf{").replace("@E", "}") for c in cells]
            lines.append(tex(self.titles.get(method, method)) + " & " + " & ".join(cells)
                         + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.changed():
            lines.append(f"% parameters other than the papers': {self.changed()}")
        return "\n".join(lines) + "\n"

    def figure(self, *, count: int = 3, fig=None):
        """The curves per metric (a bar of means for a metric without one), above the maps
        of the first ``count`` images by every method."""
        return figures.evaluation_figure(self, count=count, fig=fig)

    def _save_data(self, path: str, ext: str) -> str:
        if ext == ".csv":
            return self.to_csv(path)
        if ext == ".npz":
            arrays = {f"score_{m}_{k}": v.numpy() for m, d in self.scores.items()
                      for k, v in d.items()}
            arrays.update({f"curve_{m}_{k}": c.numpy() for m, d in self.curves.items()
                           for k, (c, _) in d.items()})
            arrays.update({f"curve_x_{m}_{k}": x.numpy() for m, d in self.curves.items()
                           for k, (_, x) in d.items()})
            return write_atomically(path, lambda f: np.savez_compressed(
                f, images=np.asarray(self.images), methods=np.asarray(self.methods),
                metrics=np.asarray(self.metrics), **arrays))
        text = (self.to_markdown() if ext == ".md" else self.to_latex()).encode()
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        ran = [m for m in self.methods if m not in self.not_applicable]
        return (f"EvaluationResult({self.model}, {len(self.images)} image(s), "
                f"{len(ran)} method(s) by {len(self.metrics)} metric(s)"
                + (f", {len(self.not_applicable)} n/a" if self.not_applicable else "") + ")")
