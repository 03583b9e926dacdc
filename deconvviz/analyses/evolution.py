"""Feature evolution during training: Zeiler & Fergus Fig. 4.

For each checkpoint, each chosen feature's strongest activation across a set of images (a
dataset scan with ``top=1``) is projected to pixels and cropped to its receptive field. The
figure has a block per layer, a row per feature and a column per checkpoint.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
from torch import nn

from .. import figures
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import choose_features
from ..data.images import ImagesArg, image_list
from ..data.runs import run_checkpoints
from ..data.zoo import checkpoint_model, get_spec, load_model, load_weights_into, model_info
from ..engine.guard import runs_model
from ..errors import ArgumentError
from .dataset_scan import scan
from .result import Result
from .scan_result import Hit
from .top_hits import project_hits

__all__ = ["evolution", "EvolutionResult"]


@dataclass
class EvolutionResult(Result):
    """The outcome of :func:`evolution`.

    Attributes:
        model: the zoo name (or the user model's class name).
        layers: the layers, in the order given.
        features: per layer, the feature indices (rows).
        checkpoints: the checkpoint files (columns), in order.
        labels: a short label per checkpoint (``"epoch 5"``).
        projections: per layer, ``[features, checkpoints, 3, H, W]`` float arrays: each
            strongest activation's projection cropped to its receptive field.
        patches: per layer, ``[features, checkpoints, H, W, 3]`` uint8 image patches under
            the same fields.
        hits: per layer, ``hits[layer][f][c]``: feature ``f``'s strongest activation under
            checkpoint ``c`` (a :class:`~deconvviz.analyses.scan_result.Hit`).
        method: the reverse pass used.
        notes: per layer, ``notes[layer][f][c]``: why feature ``f``'s tile under checkpoint
            ``c`` is not an answer ("never fired": no image made it fire; "numerically
            zero", ...: :func:`~deconvviz.analyses.map_check.check_map`), ``None`` where it
            is; the figure writes it under the tile.
    """

    kind: ClassVar[str] = "evolution"

    model: str
    layers: List[str]
    features: Dict[str, List[int]]
    checkpoints: List[str]
    labels: List[str]
    projections: Dict[str, np.ndarray]
    patches: Dict[str, np.ndarray]
    hits: Dict[str, List[List[Hit]]]
    method: str = "deconvnet"
    notes: Dict[str, List[List[Optional[str]]]] = field(default_factory=dict)

    def figure(self, *, scaling: str = "signed", patches: bool = False):
        """Zeiler & Fergus Fig. 4: a block per layer, a row per feature, a column per
        checkpoint (with ``patches=True``, each projection beside its image patch)."""
        how = "" if self.method == "deconvnet" else f" ({self.method})"
        return figures.evolution_figure(
            {l: self.projections[l] for l in self.layers}, self.features, self.labels,
            patches={l: self.patches[l] for l in self.layers} if patches else None,
            scaling=scaling, title=f"{self.model}{how}: feature evolution during training",
            notes=self.notes)

    def _save_data(self, path: str, ext: str) -> str:
        arrays = {f"{l}_projections": self.projections[l] for l in self.layers}
        arrays.update({f"{l}_features": np.array(self.features[l]) for l in self.layers})
        arrays["labels"] = np.array(self.labels)
        arrays.update({f"{l}_notes": np.array([[n or "" for n in row] for row in self.notes[l]])
                       for l in self.layers if l in self.notes})
        return write_atomically(path, lambda f: np.savez_compressed(f, **arrays))

    def __repr__(self) -> str:
        return (f"EvolutionResult({self.model}, layers {', '.join(self.layers)}, "
                f"{len(self.checkpoints)} checkpoints: {', '.join(self.labels)})")


def _label(path: str) -> str:
    match = re.fullmatch(r"epoch_(\d+)", os.path.splitext(os.path.basename(path))[0])
    return f"epoch {int(match.group(1))}" if match else os.path.splitext(
        os.path.basename(path))[0]


@api(renamed={"data": "images", "on_checkpoint": "progress"},
     legacy=("checkpoints", "images", "layers", "features"), legacy_from=1,
     adapt={"on_checkpoint": lambda old: lambda done, total, label: old(label)})
@runs_model
def evolution(model: Union[None, str, nn.Module], images: ImagesArg, *,
              checkpoints: Union[str, "os.PathLike[str]", Sequence[str]],
              layers: Sequence[str], features: Union[str, Sequence[int]] = "random:6",
              seed: int = 0, method: str = "deconvnet", batch_size: int = 32,
              workers: int = 0, progress: ProgressArg = True, device: Optional[str] = None,
              precision: Optional[str] = None) -> EvolutionResult:
    """How features evolve over a series of checkpoints (Zeiler & Fergus Fig. 4).

    Args:
        model: a zoo name, whose checkpoints :func:`load_model` reads, or a model whose
            ``state_dict`` each checkpoint holds (it is copied, never changed); ``None``
            reads the zoo name from the first checkpoint (one written by :func:`train`).
        images: the images scanned at each checkpoint, in any form of the glossary
            (docs/api.md): a folder (recursive), a text file of paths, a list, ...
        checkpoints: a run folder (its ``epoch_K.pt`` files, in epoch order) or a list of
            checkpoint files, in the order to draw them.
        layers: layer names (aliases or module paths).
        features: per layer, ``"random:6"`` (seeded by ``seed``), ``"0-5"`` or a list.
        method: the reverse pass, ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: the scans' batch size.
        workers: the scans' ``DataLoader`` workers.
        progress: ``True`` (a bar per scan), ``False``, or ``progress(done, total, label)``
            called once each checkpoint is done, ``label`` its path.
        device: where to run (default: the CPU, or the given model's device).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        An :class:`EvolutionResult`.
    """
    files = (run_checkpoints(checkpoints) if isinstance(checkpoints, (str, os.PathLike))
             else [os.fspath(c) for c in checkpoints])
    if not files:
        raise ArgumentError("no checkpoints given")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ArgumentError(f"checkpoint not found: {missing[0]}")
    layers = list(layers)
    if not layers:
        raise ArgumentError("no layers given")
    if model is None:
        model = checkpoint_model(files[0])
        if model is None:
            raise ArgumentError(f"{files[0]} does not say which model it is (a plain state "
                                f"dict, not a deconvviz checkpoint); give the model (--model)")
    name = _name_of(model)
    paths = image_list(images)
    chosen: Dict[str, List[int]] = {}
    projections: Dict[str, list] = {l: [] for l in layers}
    patches: Dict[str, list] = {l: [] for l in layers}
    hits: Dict[str, list] = {l: [] for l in layers}
    notes: Dict[str, list] = {l: [] for l in layers}
    bar = progress_bar(progress if callable(progress) else False, total=len(files),
                       desc="checkpoints")
    for path in files:
        net = _with_weights(model, path, device)
        result = scan(net, paths, layers=layers, hits=1, batch_size=batch_size,
                      workers=workers, progress=progress is True)
        for layer in layers:
            if layer not in chosen:
                count = result.features(layer)
                spec = features if isinstance(features, str) else ",".join(map(str, features))
                chosen[layer] = choose_features(spec, count, seed=seed)
            found = project_hits(result, layer, chosen[layer], model=net, method=method)
            projections[layer].append([h.projections[0] if h.projections else None
                                       for h in found])
            patches[layer].append([h.patches[0] if h.patches else None for h in found])
            hits[layer].append([h.hits[0] if h.hits else None for h in found])
            notes[layer].append([h.notes[0] if h.hits else "never fired" for h in found])
        bar.update(1, path)
    bar.close()
    return EvolutionResult(
        model=name, layers=layers, features=chosen, checkpoints=files,
        labels=[_label(f) for f in files],
        projections={l: _stack(projections[l], chw=True) for l in layers},
        patches={l: _stack(patches[l], chw=False) for l in layers},
        hits={l: [list(col) for col in zip(*hits[l])] for l in layers}, method=method,
        notes={l: [list(col) for col in zip(*notes[l])] for l in layers})


def _name_of(model: Union[str, nn.Module]) -> str:
    if isinstance(model, str):
        return get_spec(model).name
    info = model_info(model)
    return info.name if info is not None else type(model).__name__


def _with_weights(model: Union[str, nn.Module], path: str, device: Optional[str]) -> nn.Module:
    if isinstance(model, str):
        net = load_model(model, weights=path)
    else:
        net = copy.deepcopy(model)
        load_weights_into(net, path)
    if device is not None:
        net = net.to(device)
    return net


def _stack(per_checkpoint: List[list], chw: bool) -> np.ndarray:
    """``[checkpoints][features]`` crops -> ``[features, checkpoints, ...]``; a feature with no
    hit (no image read) is zeros."""
    shape = next((a.shape for col in per_checkpoint for a in col if a is not None), (1, 1, 3))
    rows = []
    for f in range(len(per_checkpoint[0])):
        row = []
        for col in per_checkpoint:
            a = col[f] if col[f] is not None and col[f].shape == shape else np.zeros(
                shape, np.float32 if chw else np.uint8)
            row.append(np.transpose(a, (2, 0, 1)).astype(np.float32) if chw else a)
        rows.append(np.stack(row))
    return np.stack(rows)

