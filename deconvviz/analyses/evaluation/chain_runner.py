"""Perturbation curves on the incremental forward
(:class:`deconvviz.engine.passes.chain.IncrementalChain`): each step changes each image in
one place (one more region removed, one more superpixel), so each step recomputes only what
that place reaches, from the step before; the images run in groups of ``batch_size``. Used
on a CPU (where it computes several times less than the plain passes: VGG16, 16-px
regions); on a GPU the plain batched passes run instead, unless asked. Chosen
automatically, a few steps are timed against plain batched passes, and the rest run as plain
passes where the chain does not pay (:data:`WARM`, :data:`PROBE`, :data:`WORTH`)."""
from __future__ import annotations

import time
import warnings
from typing import Callable, List, Optional

import torch
from torch import Tensor

from ...errors import ArgumentError, UnsupportedOpError
from .base import Inputs
from .perturbation import Forward

__all__ = ["chain_for", "Chain"]

# step k of a group of images -> [G, H, W] bool, the pixels that step replaces
Changed = Callable[[List[int], int], Tensor]


def _windows(changed: Tensor, h: int, w: int):
    """Each image's box around its changed pixels, all of one size (the largest), moved
    inside the image: tops, lefts, height, width."""
    rows, cols = changed.any(dim=2), changed.any(dim=1)  # [G, H], [G, W]
    idx_h, idx_w = torch.arange(h), torch.arange(w)
    top = torch.where(rows, idx_h, h).amin(dim=1)
    bottom = torch.where(rows, idx_h, -1).amax(dim=1) + 1
    left = torch.where(cols, idx_w, w).amin(dim=1)
    right = torch.where(cols, idx_w, -1).amax(dim=1) + 1
    none = ~rows.any(dim=1)
    top, left = torch.where(none, 0, top), torch.where(none, 0, left)
    bottom, right = torch.where(none, 1, bottom), torch.where(none, 1, right)
    wh, ww = int((bottom - top).max()), int((right - left).max())
    top = torch.minimum(top, torch.tensor(h - wh)).clamp_min(0)
    left = torch.minimum(left, torch.tensor(w - ww)).clamp_min(0)
    return top.tolist(), left.tolist(), wh, ww


# The automatic choice (incremental=None) runs the unperturbed images as a plain pass,
# timed (one pass of the group more than the floor: the chain's base is another); the
# chain's steps WARM to WARM + PROBE - 1 (after its first steps: new window shapes, first
# kernels) are timed against it, and where a chain step costs more than WORTH of that pass
# the rest runs as plain batched passes. On a small model or few images the windows'
# bookkeeping can cost more than the multiply-adds it saves (ResNet-18, one image: about
# 1.7x the plain passes, 5.0 s against 3.0 s).
WARM, PROBE, WORTH = 2, 4, 0.75


class Chain:
    """The incremental steps of one model, traced once; ``guard``: fall back to plain
    batched passes where the steps do not pay (the automatic choice; ``incremental=True``
    keeps the chain for every step)."""

    def __init__(self, inputs: Inputs, forward: Forward, traced, guard: bool = True):
        self.inputs, self.forward, self.traced, self.guard = inputs, forward, traced, guard
        self.fell_back = False
        returned = traced.output_node
        if returned.op == "output":
            returned = returned.args[0]
        self.output = returned.name

    def curve(self, changed: Changed, replacement: Tensor, steps: int):
        """``(y0 [N], curve [N, steps])``: the class output of the images, and after each
        step, step k replacing the pixels ``changed(group, k)`` by ``replacement``'s."""
        x = self.inputs.images
        n = x.shape[0]
        y0 = torch.zeros(n, dtype=torch.float64)
        out = torch.zeros(n, steps, dtype=torch.float64)
        size = max(1, int(self.inputs.batch_size))
        dev, dt = self.forward.device, self.forward.dtype
        for start in range(0, n, size):
            group = list(range(start, min(n, start + size)))
            current = x[group].to(dev, dt).clone()
            removed = replacement[group].to(dev, dt)
            self._group(group, current, removed, changed, steps, y0, out)
            self.forward._tell(group[-1] + 1, n)
        return y0, out

    def _group(self, group, current, removed, changed, steps, y0, out) -> None:
        from ...engine.passes.chain import IncrementalChain

        targets = self.inputs.targets[group]
        h, w = current.shape[-2:]
        plan = IncrementalChain(self.traced, [self.output])
        per_step = None
        if self.guard:  # the unperturbed images, plainly, timed
            began = time.perf_counter()
            y0[group] = self.forward(current, targets)
            per_step = time.perf_counter() - began
            plan.set_base(current)
        else:
            y0[group] = self.forward.read(plan.set_base(current)[self.output], targets)
            self.forward.passes += len(group)
        probed = 0.0
        for k in range(steps):
            began = time.perf_counter()
            mask = changed(group, k)
            current = torch.where(mask[:, None].to(current.device), removed, current)
            top, left, wh, ww = _windows(mask.cpu(), h, w)
            windows = torch.stack([current[j, :, t:t + wh, v:v + ww]
                                   for j, (t, v) in enumerate(zip(top, left))])
            out[group, k] = self.forward.read(plan.step(windows, top, left)[self.output],
                                              targets)
            self.forward.passes += len(group)
            if WARM <= k < WARM + PROBE:
                probed += time.perf_counter() - began
            if (per_step is not None and k == WARM + PROBE - 1 and k + 1 < steps
                    and probed / PROBE > WORTH * per_step):
                out[group, k + 1:] = self._plain(group, current, changed, removed,
                                                 range(k + 1, steps))
                self.fell_back = True
                return

    def _plain(self, group: List[int], current: Tensor, changed: Changed, removed: Tensor,
               ks) -> Tensor:
        """``[G, len(ks)]``: steps ``ks`` (in order, from ``current``) as plain batched
        passes."""
        state = {"image": current}

        def build(k: int) -> Tensor:
            mask = changed(group, k)[:, None].to(current.device)
            state["image"] = torch.where(mask, removed, state["image"])
            return state["image"]

        return self.forward.images(build, list(ks), self.inputs.targets[group])


def chain_for(inputs: Inputs, forward: Forward, strict: bool = False) -> Optional[Chain]:
    """The incremental steps for ``inputs.model``; ``None`` where they do not apply (a GPU,
    unless ``strict``; a model that cannot be traced), where ``strict`` raises instead."""
    from ...engine.passes.graph import trace
    from ..occlusion import _can_increment

    if forward.device.type != "cpu" and not strict:
        return None
    if not _can_increment(inputs.model):
        if strict:
            raise ArgumentError("the incremental forward needs the model in eval mode")
        return None
    try:
        traced = trace(inputs.model)
    except UnsupportedOpError:
        if strict:
            raise
        warnings.warn("the model cannot be traced; running plain forward passes",
                      stacklevel=3)
        return None
    return Chain(inputs, forward, traced, guard=not strict)
