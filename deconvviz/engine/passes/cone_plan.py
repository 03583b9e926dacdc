"""The projector's plan for ``mode="max"``: each projection inside its receptive-field cone, or
the full-size pass, whichever is the faster exact plan for the layer and device
(:mod:`deconvviz.engine.passes.plan` decides; a GPU near the break-even point measures once).

These functions take the :class:`~deconvviz.engine.projector.Projector` they plan for
(``net``): its method, trace, memory budget and full-size reverse pass.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor

from .cone import bytes_per_seed, plan_cone
from .layout import channels_last_nodes
from .plan import MEASURED as _MEASURED
from .plan import choose, cone_share, memory_budget, rec_device, time_plans
from .recording import Recording
from .reverse import ReversePass
from .seeds import strongest

__all__ = ["project_cone", "cone_plan", "run_cone", "units_in_cone"]


def project_cone(net, steps: ReversePass, rec: Recording, node: str, act: Tensor,
                  features: List[int], forced: bool = False,
                  make: Optional[Callable[[int, int], Tensor]] = None) -> Optional[Tensor]:
    """``[N, K, 3, H, W]`` through the cone, or ``None`` where the full-size pass is the
    faster plan (``make``: the full pass's seeds, for a one-time measurement)."""
    n, k = act.shape[0], len(features)
    values, ys, xs = (t.reshape(-1) for t in strongest(act, features))
    images = torch.arange(n, device=act.device).repeat_interleave(k)
    chosen = torch.as_tensor(features, device=act.device).repeat(n)
    plan = cone_plan(net, steps, rec, node, forced)
    if plan is None:
        return None
    head = 0
    parts = []
    if not forced and plan.choice == "measure":
        key = (node, net.method.name, tuple(rec.input_shape), str(act.device))
        decided = _MEASURED.get(key)
        if decided is None and make is not None and k > 1:
            head = max(1, min(k // 2, 8))  # the first seeds of each image, by both plans
            mine = (torch.arange(n * k, device=act.device) % k) < head
            idx = mine.nonzero()[:, 0]
            decided, first = time_plans(
                key, lambda: run_cone(net, plan, images[idx], chosen[idx], ys[idx],
                                            xs[idx], values[idx]),
                lambda: net._reverse_in_chunks(steps, rec, node, make, head, n),
                act.device)
            parts.append(first.reshape(n, head, *first.shape[1:]))
        if decided == "full":
            if head:
                rest = net._reverse_in_chunks(
                    steps, rec, node, lambda k0, k1: make(head + k0, head + k1), k - head, n)
                return torch.cat(parts + [rest], dim=1)
            return None
    elif not forced and plan.choice == "full":
        return None
    rest = (torch.arange(n * k, device=act.device) % k) >= head
    idx = rest.nonzero()[:, 0]
    if len(idx):
        out = run_cone(net, plan, images[idx], chosen[idx], ys[idx], xs[idx], values[idx])
        parts.append(out.reshape(n, k - head, *out.shape[1:]))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def cone_plan(net, steps: ReversePass, rec: Recording, node: str, forced: bool = False):
    """The cone's plan with ``choice`` set (``"cone"``, ``"full"`` or ``"measure"``, see
    :func:`deconvviz.engine.passes.plan.choose`), or ``None`` where there is no smaller cone."""
    if net.method.relevance:  # LRP's rules read whole maps: always the full-size pass
        return None
    if net._channels_last(node, rec) and node not in channels_last_nodes(reversed(steps.ops)):
        return None  # channels last in a way the cone does not follow (tokens): full size
    plan = plan_cone(net.traced, steps.ops, steps.folded, net.method, rec, node,
                     require_cheaper=not forced)
    if plan is not None:
        plan.share = cone_share(plan, steps.ops)
        plan.choice = "cone" if forced else choose(plan.share, rec_device(rec))
    return plan


def run_cone(net, plan, images, features, ys, xs, values) -> Tensor:
    budget = memory_budget(net.max_memory, values.device)
    chunk = max(1, budget // bytes_per_seed(plan.windows, plan.rec, plan.shapes))
    with torch.no_grad():
        return torch.cat([plan.project(images[i:i + chunk], features[i:i + chunk],
                                       ys[i:i + chunk], xs[i:i + chunk], values[i:i + chunk])
                          for i in range(0, len(images), chunk)])


def units_in_cone(net, steps, rec, node, images, features, ys, xs, values,
                   forced: bool = False) -> Optional[Tensor]:
    plan = cone_plan(net, steps, rec, node, forced)
    if plan is None or plan.choice == "full":
        return None
    if plan.choice == "measure":  # as measured by project(), where it has been
        key = (node, net.method.name, tuple(rec.input_shape), str(values.device))
        if _MEASURED.get(key) == "full":
            return None
    return run_cone(net, plan, images, features, ys, xs, values)
