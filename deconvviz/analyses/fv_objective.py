"""Feature visualisation's objectives: which units are optimised (and their labels), each
image's objective value from the layer's activations, Lucid's diversity term, and the
memory one image's optimisation keeps."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..data.zoo import class_names
from ..errors import ArgumentError

__all__ = ["Objective", "gram_penalty", "saved_bytes", "step_gradient", "units_of"]


class Objective:
    """Each image's objective value from the layer's activations (before ``negative``)."""

    def __init__(self, objective: str, units: Tensor, position=None, directions=None):
        self.objective, self.units = objective, units
        self.position, self.directions = position, directions

    def __call__(self, act: Tensor, rows: Tensor) -> Tensor:
        b = torch.arange(act.shape[0], device=act.device)
        if self.objective == "direction":
            d = self.directions[rows].to(act.dtype)
            prod = act * d.reshape(d.shape + (1,) * (act.dim() - 2))
            return prod.sum(1).flatten(1).mean(1) if act.dim() > 2 else prod.sum(1)
        unit_act = act[b, self.units[rows]]
        if unit_act.dim() == 1:  # a linear layer's output, or the logits
            return unit_act
        if self.objective == "neuron":
            return unit_act[:, self.position[0], self.position[1]]
        return unit_act.flatten(1).mean(1)

    def fired(self, act: Tensor, rows: Tensor) -> Tensor:
        """Whether each image's unit is > 0 where the objective reads it (a ReLU's input:
        the ReLU's output is not all zero); a direction: any unit it weighs."""
        b = torch.arange(act.shape[0], device=act.device)
        if self.objective == "direction":
            d = self.directions[rows] != 0
            return ((act > 0) & d.reshape(d.shape + (1,) * (act.dim() - 2))).flatten(1).any(1)
        unit_act = act[b, self.units[rows]]
        if self.objective == "neuron" and unit_act.dim() > 1:
            unit_act = unit_act[:, self.position[0], self.position[1]]
        return (unit_act > 0).reshape(len(b), -1).any(1)



def gram_penalty(act: Tensor, group: int) -> Tensor:
    """Lucid's diversity: within each group of ``group`` images, the summed cosine similarity
    of every other image's Gram matrix (channels x channels), over ``group``."""
    if group < 2:
        return act.new_zeros(())
    flat = act.flatten(2)  # [B, C, positions]
    grams = flat @ flat.transpose(1, 2)
    grams = grams.flatten(1)
    grams = grams / grams.norm(dim=1, keepdim=True).clamp_min(1e-10)
    grams = grams.reshape(-1, group, grams.shape[1])
    sim = grams @ grams.transpose(1, 2)  # [units, group, group]
    off = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return off.sum() / group


def step_gradient(params: Tensor, objective: Tensor, penalty: Optional[Tensor],
                  moved: Tensor) -> Tensor:
    """The step's gradient of ``objective`` (plus the diversity ``penalty``), marking in
    ``moved`` each image the objective's own gradient reached (not all zero): until every
    image is marked, the objective's gradient is taken apart from the penalty's, which
    reaches every image whatever the unit."""
    if penalty is None or bool(moved.all()):
        grad, = torch.autograd.grad(objective if penalty is None else objective + penalty,
                                    [params])
        moved |= grad.flatten(1).ne(0).any(1)
        return grad
    grad, = torch.autograd.grad(objective, [params], retain_graph=True)
    moved |= grad.flatten(1).ne(0).any(1)
    return grad + torch.autograd.grad(penalty, [params])[0]



def saved_bytes(run: Callable[[], Tensor], model: nn.Module) -> int:
    """Bytes autograd keeps for the backward pass of ``run()`` (a probe on one image),
    without the model's weights (kept once, whatever the batch)."""
    weights = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    seen, total = set(), [0]

    def pack(t: Tensor):
        key = (t.data_ptr(), t.numel())
        if key not in seen and t.data_ptr() not in weights:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run().sum()
    return total[0]



def units_of(model, objective, units, directions, channels, layer_name):
    """The unit indices and their labels; raises naming the valid range."""
    if objective == "direction":
        if directions is None:
            raise ArgumentError("the direction objective needs directions=[K, channels]")
        d = torch.as_tensor(directions)
        if d.dim() == 1:
            d = d[None]
        if d.dim() != 2 or d.shape[1] != channels:
            raise ArgumentError(f"directions must be [K, {channels}] for {layer_name}, got "
                                f"{list(d.shape)}")
        return list(range(d.shape[0])), [f"direction {i}" for i in range(d.shape[0])]
    if units is None:
        units = range(channels)
    elif isinstance(units, (int, str)):
        units = [units]
    names = class_names(model) if objective == "logit" else None
    out = []
    for unit in units:
        if objective == "logit" and isinstance(unit, str) and not unit.strip().isdigit():
            from .attribution import _class_index

            unit = _class_index(unit, names, channels)
        elif isinstance(unit, str) and not unit.strip().lstrip("-").isdigit():
            raise ArgumentError(f"feature {unit!r}: a layer's features are channel numbers "
                                f"(0 to {channels - 1}); class names are for "
                                f"objective='logit'")
        unit = int(unit)
        if not 0 <= unit < channels:
            what = "class" if objective == "logit" else "feature"
            raise ArgumentError(f"{what} {unit} is out of range for {layer_name}: valid are "
                                f"0 to {channels - 1}")
        out.append(unit)
    if not out:
        raise ArgumentError("no units to visualise")
    if objective == "logit":
        return out, [names[u] if names else f"class {u}" for u in out]
    return out, [f"unit {u}" for u in out]
