"""Sanity checks (Adebayo et al., NeurIPS 2018): does a picture depend on the learned weights?

Cascading model-parameter randomisation: step 0 is the model as given; step k re-initialises,
with each layer's own default initialisation (``reset_parameters()``) and a fixed seed, the k
topmost layers that hold parameters (the logits first, then downwards to the first
convolution). At each step every method's map of the same target (the original top-1 class)
is compared with its step-0 map:

- Spearman rank correlation of the absolute 2-D maps and of the signed 2-D maps (a method's
  ``[C, H, W]`` map summed over colour channels);
- SSIM of the absolute 2-D maps, each scaled to [0, 1] by its maximum.

Spearman is torchmetrics'; SSIM is torchmetrics' arithmetic in float64 (:func:`ssim`).
Values are averaged over the images. A map that is
constant (a Grad-CAM rectified to zero everywhere) shares no rank order with the original:
torchmetrics reports its correlations as 0. The user's model is never changed:
the randomisation happens on a deep copy.

Each step reuses what it did not change (``reuse=True``, :class:`_Reused`): one forward
pass per step for every reverse-pass method, recomputed only from the layer re-initialised
up, and Grad-CAM from its own layer up.
"""
from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures, method_table
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..data.images import ImagesArg, to_rgb
from ..data.zoo import model_info, model_name
from ..engine import Projector
from ..engine.guard import runs_model
from ..engine.passes.graph import TracedModel, trace
from ..engine.passes.recording import images_for
from ..errors import ArgumentError
from ..results import Result, csv_columns
from .attribution import _reverse, attribute_map, default_cam_layer, grad_cam, resolve_target

__all__ = ["SanityResult", "sanity_check", "parametrised_layers", "reinitialise", "ssim",
           "METRICS", "DEFAULT_METHODS"]

METRICS = ("spearman_abs", "spearman_signed", "ssim")
DEFAULT_METHODS = method_table.SANITY_DEFAULT


@dataclass
class SanityResult(Result):
    """The outcome of :func:`sanity_check`.

    Attributes:
        steps: the layer re-initialised at each step (``"original"`` for step 0).
        methods: the methods compared.
        scores: method -> metric -> one value per step (``METRICS``: ``spearman_abs``,
            ``spearman_signed``, ``ssim``).
        maps: method -> ``[steps, N, C, H, W]`` maps.
        target: the class explained at every step (each image's original top-1).
        rgb: the crops the network saw.
        model: the model's name.
    """

    kind: ClassVar[str] = "sanity"

    steps: List[str]
    methods: List[str]
    scores: Dict[str, Dict[str, List[float]]]
    maps: Dict[str, Tensor]
    target: object
    rgb: List[np.ndarray]
    model: str
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path
    titles: Dict[str, str] = field(default_factory=method_table.titles)
    display: Dict[str, str] = field(default_factory=method_table.displays)

    @api(renamed={"image": "index"})
    def figure(self, *, index: int = 0, max_columns: int = 10, fig=None):
        """Adebayo's Fig. 2 for image ``index``: a row of maps per method across the steps,
        above the curves."""
        return figures.sanity_figure(self, image=index, max_columns=max_columns, fig=fig)

    def _table(self):
        """The table as columns (``to_dict``/``to_csv``)."""
        return csv_columns(self.table())

    def table(self) -> str:
        """The scores as CSV: one row per step, method and metric."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", "layer", "method", *METRICS])
        for method in self.methods:
            for k, step in enumerate(self.steps):
                writer.writerow([k, step, method] + [f"{self.scores[method][m][k]:.6g}"
                                                     for m in METRICS])
        return buffer.getvalue()

    def _save_data(self, path: str, ext: str) -> str:
        text = self.table().encode()  # .csv
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        last = {m: self.scores[m]["spearman_abs"][-1] for m in self.methods}
        ends = ", ".join(f"{m} {v:.2f}" for m, v in last.items())
        return (f"SanityResult({self.model}, {len(self.steps) - 1} layers randomised; "
                f"Spearman |map| at the last step: {ends})")


def parametrised_layers(model: nn.Module, *, traced: Optional[TracedModel] = None) -> List[str]:
    """The module paths of the layers that hold parameters, in forward order (the order of
    their first call in the traced graph; ``traced``: the model's trace, if made already)."""
    traced = traced if traced is not None else trace(model)
    seen: List[str] = []
    for op in traced.ops.values():
        path = op.node.target if op.node.op == "call_module" else None
        if path and path not in seen and any(
                True for _ in model.get_submodule(path).parameters(recurse=False)):
            seen.append(path)
    return seen


def reinitialise(model: nn.Module, path: str, seed: int) -> None:
    """Re-initialise layer ``path`` of ``model`` in place with its own default initialisation
    (``reset_parameters()``), drawn from ``seed`` (the global random state is left as it
    was)."""
    module = model.get_submodule(path)
    if not hasattr(module, "reset_parameters"):
        raise ArgumentError(f"layer {path!r} ({type(module).__name__}) has no "
                            f"reset_parameters() to re-initialise it with")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        module.reset_parameters()


def _two_d(maps: Tensor) -> Tensor:
    return maps.sum(dim=1)  # [N, H, W]


def ssim(preds: Tensor, target: Tensor) -> Tensor:
    """torchmetrics' ``structural_similarity_index_measure`` (its defaults: a Gaussian window
    of 11 px and sigma 1.5, reflected borders, k1 = 0.01, k2 = 0.03; ``data_range=1``) of
    each pair of ``[B, 1, H, W]`` maps in float64, one value per pair. The same arithmetic
    with the Gaussian window applied as two 1-D passes (its 2-D window is their outer
    product): 6x to 10x faster on a CPU, where float64 convolutions take the slow path,
    and equal to torchmetrics' to float64 rounding (``tests/test_sanity_reuse.py``: 1e-12).
    A pair of identical maps is 1 exactly, as SSIM is by definition."""
    import torch.nn.functional as F

    p, t = preds.double(), target.double()
    side, sigma = 11, 1.5  # torchmetrics: int(3.5 * sigma + 0.5) * 2 + 1 = 11
    dist = torch.arange((1 - side) / 2, (1 + side) / 2, 1, dtype=torch.float64,
                        device=p.device)
    gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    gauss = gauss / gauss.sum()
    pad = (side - 1) // 2
    p = F.pad(p, (pad, pad, pad, pad), mode="reflect")
    t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
    both = torch.cat((p, t, p * p, t * t, p * t))
    both = F.conv2d(F.conv2d(both, gauss.view(1, 1, side, 1)), gauss.view(1, 1, 1, side))
    mu_p, mu_t, pp, tt, pt = both.split(p.shape[0])
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    var_p = torch.clamp(pp - mu_p.pow(2), min=0.0)
    var_t = torch.clamp(tt - mu_t.pow(2), min=0.0)
    cov = pt - mu_p * mu_t
    full = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p.pow(2) + mu_t.pow(2) + c1) * (var_p + var_t + c2))
    out = full.reshape(full.shape[0], -1).mean(-1)
    same = (preds == target).flatten(1).all(dim=1)
    return torch.where(same, torch.ones_like(out), out)


def _scores(reference: Tensor, other: Tensor) -> Dict[str, float]:
    from torchmetrics.functional.regression import spearman_corrcoef

    a, b = _two_d(reference).double(), _two_d(other).double()
    out = {m: 0.0 for m in METRICS}
    for i in range(a.shape[0]):
        out["spearman_abs"] += float(spearman_corrcoef(b[i].abs().flatten(),
                                                       a[i].abs().flatten()))
        out["spearman_signed"] += float(spearman_corrcoef(b[i].flatten(), a[i].flatten()))
    scaled = [t.abs() / torch.where(t.abs().amax((1, 2), keepdim=True) > 0,
                                    t.abs().amax((1, 2), keepdim=True), 1.0)
              for t in (a, b)]
    out["ssim"] = float(ssim(scaled[1][:, None], scaled[0][:, None]).sum())
    return {m: v / a.shape[0] for m, v in out.items()}


class _Reused:
    """A cascade's step for the reverse-pass methods and Grad-CAM, reusing what the step
    did not change: one recording of the copy per step, shared by every reverse-pass method,
    in which only the layer re-initialised and everything above it run again
    (:class:`~deconvviz.engine.passes.rerecord.Rerecorder`, which also keeps LRP's terms of the
    layers below); Grad-CAM runs forward from its layer's input only. Other methods run as
    :func:`attribute` runs them."""

    def __init__(self, copied: nn.Module, x: Tensor, methods: Sequence[str], nets: dict,
                 target, options: dict):
        from ..engine.passes.rerecord import Rerecorder

        self.copied, self.x, self.nets, self.target = copied, x, nets, target
        self.options = options
        state: Dict[str, object] = {"keep": dict(self._net(None).recorded_state("")["keep"]),
                                    "switches": False, "inputs": set(), "arguments": set()}
        for method in {"guided" if m == "guided_gradcam" else m for m in methods}:
            if method_table.get(method).is_reverse_pass:
                mine = self._net(method).recorded_state("")
                state["keep"].update(mine["keep"])
                state["switches"] = state["switches"] or mine["switches"]
                state["inputs"] |= set(mine["inputs"])
                state["arguments"] |= set(mine["arguments"])
        self.traced = self._net(None).traced
        self.again = Rerecorder(self.traced, x, **state)
        self.needed = any(method_table.get(m).is_reverse_pass or m in ("gradcam",
                                                                       "guided_gradcam")
                          for m in methods)
        self.recording = None
        self.maps: Dict[str, Tensor] = {}

    def _net(self, method: Optional[str]) -> Projector:
        first = next(iter(self.nets.values()))
        if method is None:
            return first
        if method not in self.nets:
            self.nets[method] = first.with_method(method)
        return self.nets[method]

    def step(self, path: Optional[str]) -> None:
        """Record the step after ``path`` was re-initialised (``None``: step 0)."""
        if self.needed:
            self.recording = self.again.record(None if path is None else [path])
        self.maps = {}

    def attribute(self, method: str) -> Tensor:
        if method not in self.maps:
            self.maps[method] = self._attribute(method)
        return self.maps[method]

    def _attribute(self, method: str) -> Tensor:
        if method_table.get(method).is_reverse_pass:
            return _reverse(self._net(method), self.x, self.target, self.recording)
        if method == "guided_gradcam":
            return self.attribute("guided") * self.attribute("gradcam")
        if method == "gradcam":
            cam = self._grad_cam()
            if cam is not None:
                return cam
        return attribute_map(self.copied, self.x, method, resolved=self.target, nets=self.nets,
                         **self.options)

    def _grad_cam(self) -> Optional[Tensor]:
        """Grad-CAM from its layer's last weighted op on, or ``None`` (its layer is not a
        module the graph calls, or the graph's values cannot be reused)."""
        net = self._net(None)
        name = self.options.get("cam_layer") or default_cam_layer(net)
        path = net.layer(name, tuple(self.x.shape[-2:])).path
        graph = self.traced.graph_module.graph
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == path]
        if not path or not calls or not self.again.reuses:
            return None
        start, stack = set(), list(calls)
        while stack:  # back to the weights that make the layer's output need a gradient
            node = stack.pop()
            if node.name in start or node.op in ("placeholder", "get_attr"):
                continue
            start.add(node.name)
            weighted = node.op == "call_module" and any(
                True for _ in self.copied.get_submodule(node.target).parameters())
            if not weighted:
                stack.extend(node.all_input_nodes)
        tail, values = self.again.tail(start)
        if not all(isinstance(v, Tensor) for v in values):
            return None
        return grad_cam(tail, self.copied.get_submodule(path), tuple(values),
                        self.target.classes, tuple(self.x.shape[-2:]))


@api(renamed={"x": "images"}, legacy=("methods",))
@runs_model
def sanity_check(model: nn.Module, images: ImagesArg, *,
                 methods: Optional[Sequence[str]] = None,
                 target: Union[None, int, str] = None, seed: int = 0,
                 layers: Optional[Sequence[str]] = None, progress: ProgressArg = False,
                 reuse: bool = True, device: Optional[str] = None,
                 precision: Optional[str] = None, **options) -> SanityResult:
    """Adebayo's cascading randomisation of ``model``'s layers, top down, and how much each
    method's map changes (see the module docstring).

    Args:
        model: the network (never changed: a copy is randomised).
        images: photos in any form of the glossary (docs/api.md): a path, a folder, a
            ``PIL.Image``, a normalised tensor ``[N, 3, H, W]`` or ``[3, H, W]``, or a list.
        methods: method names (default: deconvnet, guided, gradient, gradcam).
        target: the class explained (default: each image's top-1 class on ``model``).
        seed: seeds the re-initialisations (step k uses ``seed + k``).
        layers: the parametrised layers to randomise, bottom to top (default: all of them,
            :func:`parametrised_layers`).
        progress: ``True`` (a bar), ``False``, or ``progress(done, total, label)`` called
            after each map is made (one per method and step: ``(1 + len(layers)) *
            len(methods)`` calls), ``label`` ``"layer: method"``.
        reuse: reuse at each step what it did not change (default): one forward pass of
            the copy shared by every reverse-pass method, in which only the layer just
            re-initialised and what depends on it run again, LRP's terms of the layers below
            kept, and Grad-CAM run forward from its own layer; the maps are those of
            ``reuse=False``, which runs every method on the whole model at every step
            (``tests/test_sanity_reuse.py``: to 1e-6 of each map's largest value).
        **options (Any): passed to the Captum methods (see :func:`attribute`).
        device: as everywhere (docs/api.md).
        precision: ``"exact"`` or ``"tf32"`` (docs/api.md).

    Returns:
        A :class:`SanityResult`; its step 0 is the model as given (every score 1).
    """
    return _sanity_check(**{k: v for k, v in locals().items() if k != 'options'}, options=options)


def _sanity_check(model, images, *, methods, target, seed, layers, progress, reuse, device,
                  precision, options) -> SanityResult:
    methods = list(methods or DEFAULT_METHODS)
    for method in methods:
        method_table.get(method)
    x, _, _ = images_for(model, images)
    resolved = resolve_target(model, x, target)
    if not resolved.is_class:
        raise ArgumentError("the sanity check explains a class")
    copied = copy.deepcopy(model)
    first = Projector(copied)
    nets: dict = {first.method.name: first}  # one trace of the copy, for every method
    order = (list(layers) if layers is not None
             else parametrised_layers(copied, traced=first.traced))
    if not order:
        raise ArgumentError("the model has no layers with parameters to randomise")
    names, collected = ["original"], {m: [] for m in methods}
    reused = _Reused(copied, x, methods, nets, resolved, options) if reuse else None
    bar = progress_bar(progress, total=(1 + len(order)) * len(methods), desc="sanity check",
                       where="sanity_check",
                       legacy=lambda old: lambda done, total, label: old(label))
    for k, path in enumerate([None] + order[::-1]):
        if path is not None:
            reinitialise(copied, path, seed + k)
            names.append(path)
        if reused is not None:
            reused.step(path)
        for method in methods:
            made = (reused.attribute(method) if reused is not None else
                    attribute_map(copied, x, method, resolved=resolved, nets=nets, **options))
            collected[method].append(made.detach().cpu())
            bar.update(1, f"{path or 'original'}: {method}")
    bar.close()
    maps = {m: torch.stack(v) for m, v in collected.items()}
    scores = {m: {metric: [] for metric in METRICS} for m in methods}
    for method in methods:
        for k in range(len(names)):
            for metric, value in _scores(maps[method][0], maps[method][k]).items():
                scores[method][metric].append(value)
    info = model_info(model)
    return SanityResult(names, methods, scores, maps, resolved, to_rgb(x, model),
                        model_name(model),
        weights=info.weights if info else "user")
