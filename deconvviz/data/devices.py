"""Devices: parsing a device name, and joining a torchrun process group.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`distributed` joins torch's own process group
(NCCL on GPU, gloo on CPU), gives each rank its device, and leaves the group on the way out,
errors included.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional, Tuple

import torch

from ..errors import ArgumentError

__all__ = ["resolve_device", "distributed", "model_device", "model_dtype"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArgumentError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device cuda asked for, but CUDA is not available here; use cpu")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (or buffer); the CPU for a
    model that holds neither. The one place deconvviz works this out."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> Optional[torch.dtype]:
    """The dtype of ``model``'s first parameter (what its inputs must be); ``None`` for a model
    without parameters."""
    for tensor in model.parameters():
        return tensor.dtype
    return None


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[Tuple[int, torch.device]]:
    """``(rank, device)`` of this process: ``(0, device)`` outside torchrun; under torchrun,
    inside the process group, each rank on its own GPU when the device is CUDA."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, dev
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield torch.distributed.get_rank(), dev
    finally:
        torch.distributed.destroy_process_group()
