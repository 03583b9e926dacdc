"""Which exact plan projects single activations fastest: the receptive-field cone or the
full-size reverse pass, batched and chunked under a memory budget.

Both plans give the same projections (to float32 rounding: the tests hold them to 1e-5 of the
largest value). The cone does a fraction of the full pass's multiply-adds, its *share*
(:func:`cone_share`: the windows' multiply-adds over the full maps', per seed, from the
engine's geometry: VGG16 at 224 px has 0.016 at conv3_3, 0.094 at conv4_3, 0.54 at conv5_3),
but it runs them on small gathered windows, at a lower rate than the full pass's large
convolutions. :func:`choose` compares the share with that rate:

- the cone where its share is below the device's :data:`CONE_EFFICIENCY` (the rate of the
  cone's multiply-adds relative to the full pass's);
- the full-size pass where it is above;
- on a GPU, within a factor of two of the break-even point, one measurement decides: the
  first call times both plans on its first seeds (their projections are kept, nothing is
  computed twice for nothing) and the faster is cached per layer, method, input shape and
  device (:data:`MEASURED`), so later calls run it at once.

The CPU's constant was measured on this project's 2-core machine (VGG16 conv5_3, 16 seeds,
the cone 1.8x faster than the full pass for the deconvnet at a share of 0.54, 1.25x for the
gradient; conv5_1: 2.9x and 2.4x at 0.22): the cone's rate there is about that of the full
pass. The GPU's, 0.45, is derived from the issue's H200 measurements with TF32 on (the cone
at about 9 T multiply-adds/s at conv5_3, a batched ``autograd.grad`` at about 20 T); it has
not been measured with TF32 off, which is why the measurement arbitrates near it.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["CONE_EFFICIENCY", "MEASURED", "cone_share", "choose", "time_plans", "memory_budget",
           "rec_device"]

# The rate of the cone's multiply-adds relative to the full-size pass's, per device type.
CONE_EFFICIENCY: Dict[str, float] = {"cpu": 1.0, "cuda": 0.45}
OTHER_DEVICES = 0.45  # mps, xpu, ...: like a GPU, and measured near the break-even point
# (layer node, method, input shape, device) -> "cone" or "full", measured once per process
MEASURED: Dict[Hashable, str] = {}


def _macs_per_value(op) -> int:
    module = op.module
    if op.kind == "conv" and module is not None and hasattr(module, "kernel_size"):
        return math.prod(module.kernel_size) * module.in_channels // module.groups
    return 1  # pointwise, pooling, padding: one pass over the values


def cone_share(plan, ops_down) -> float:
    """Per seed, the multiply-adds of the cone's reverse pass over the full-size pass's
    (each op's output window, or its whole map, times its cost per value)."""
    cone = full = 0
    for op in ops_down:
        window = plan.windows.get(op.name)
        shape = plan.shapes.get(op.name)
        if window is None or shape is None or len(shape) < 3:
            continue
        per = _macs_per_value(op) * math.prod(shape[1:-2])
        cone += per * window.size[0] * window.size[1]
        full += per * shape[-2] * shape[-1]
    return cone / full if full else 1.0


def choose(share: float, device: Optional[torch.device]) -> str:
    """``"cone"``, ``"full"`` or ``"measure"`` (a GPU near the break-even point)."""
    kind = device.type if device is not None else "cpu"
    efficiency = CONE_EFFICIENCY.get(kind, OTHER_DEVICES)
    if kind == "cpu":
        return "cone" if share < efficiency else "full"
    if share < efficiency / 2:
        return "cone"
    if share > efficiency * 2:
        return "full"
    return "measure"


def rec_device(rec) -> Optional[torch.device]:
    """The device a recording's tensors live on."""
    for group in (rec.activations, rec.switches, rec.inputs):
        for value in group.values():
            return value.device
    return None


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_plans(key: Hashable, cone: Callable[[], Tensor], full: Callable[[], Tensor],
            device: Optional[torch.device]) -> Tuple[str, Tensor]:
    """Time ``cone()`` and ``full()`` (the same seeds, two plans) once, cache the faster
    under ``key`` and return it with the cone's projections (both are exact)."""
    timings = {}
    outputs = {}
    for name, fn in (("cone", cone), ("full", full)):
        _sync(device)
        start = time.perf_counter()
        outputs[name] = fn()
        _sync(device)
        timings[name] = time.perf_counter() - start
    MEASURED[key] = min(timings, key=timings.get)
    return MEASURED[key], outputs["cone"]


def memory_budget(max_memory: Optional[int], device: Optional[torch.device]) -> int:
    """Bytes a reverse pass may use for its signals: ``max_memory`` when given; else 512 MiB
    on a CPU and a quarter of the GPU's free memory (at least 512 MiB) on CUDA."""
    if max_memory is not None:
        return int(max_memory)
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(512 * 2**20, free // 4)
    return 512 * 2**20
