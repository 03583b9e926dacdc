"""Region perturbation's steps on the incremental forward
(:class:`deconvviz.engine.passes.chain.IncrementalChain`): each step recomputes only what
one more removed region can change, from the step before; the images run in groups of
``batch_size``. Used on a CPU (where it computes several times less than the plain passes:
VGG16, 16-px regions); on a GPU the plain batched passes run instead, unless asked."""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from torch import Tensor

from ...errors import ArgumentError, UnsupportedOpError
from .base import Inputs
from .perturbation import Forward

__all__ = ["chain_for", "Chain"]


class Chain:
    """The incremental steps of one model, traced once."""

    def __init__(self, inputs: Inputs, forward: Forward, traced):
        self.inputs, self.forward, self.traced = inputs, forward, traced
        returned = traced.output_node
        if returned.op == "output":
            returned = returned.args[0]
        self.output = returned.name

    def regions(self, baseline: Tensor, ys: List[int], xs: List[int], ranked: Tensor,
                patch: int):
        """``(y0 [N], curve [N, S])``: the class output of the images and after each of the
        ``S`` steps, step k removing region ``ranked[:, k]`` (top-left ``ys``, ``xs``)."""
        from ...engine.passes.chain import IncrementalChain

        x = self.inputs.images
        n, _, h, w = x.shape
        steps = ranked.shape[1]
        ph, pw = min(patch, h), min(patch, w)
        y0 = torch.zeros(n, dtype=torch.float64)
        curve = torch.zeros(n, steps, dtype=torch.float64)
        size = max(1, int(self.inputs.batch_size))
        dev, dt = self.forward.device, self.forward.dtype
        for start in range(0, n, size):
            group = list(range(start, min(n, start + size)))
            targets = self.inputs.targets[group]
            current = x[group].to(dev, dt).clone()
            removed = baseline[group].to(dev, dt)
            plan = IncrementalChain(self.traced, [self.output])
            y0[group] = self.forward.read(plan.set_base(current)[self.output], targets)
            for k in range(steps):
                r = ranked[group, k].tolist()
                top = [ys[i] for i in r]
                left = [xs[i] for i in r]
                wy = [min(max(t, 0), h - ph) for t in top]
                wx = [min(max(v, 0), w - pw) for v in left]
                for j, (t, v) in enumerate(zip(top, left)):
                    a, b = max(t, 0), max(v, 0)
                    current[j, :, a:t + patch, b:v + patch] = removed[j, :, a:t + patch,
                                                                      b:v + patch]
                windows = torch.stack([current[j, :, wy[j]:wy[j] + ph, wx[j]:wx[j] + pw]
                                       for j in range(len(group))])
                got = plan.step(windows, wy, wx)[self.output]
                curve[group, k] = self.forward.read(got, targets)
            self.forward._tell(group[-1] + 1, n)
        self.forward.passes += n * (steps + 1)
        return y0, curve


def chain_for(inputs: Inputs, forward: Forward, strict: bool = False) -> Optional[Chain]:
    """The incremental steps for ``inputs.model``; ``None`` where they do not apply (a GPU,
    unless ``strict``; a model that cannot be traced, or with no forward-window rule for an
    op, which would run in full anyway), where ``strict`` raises instead."""
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
        warnings.warn("region perturbation: the model cannot be traced; running plain "
                      "forward passes", stacklevel=3)
        return None
    return Chain(inputs, forward, traced)
