"""A scan under ``torchrun``: each rank scans its shard, and the ranks' top-k and histograms
are merged at the end (``torch.distributed``'s own collectives)."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.distributed as dist

from .scan_tops import empty_tops, merge

__all__ = ["distributed", "gather"]


def distributed() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1



def gather(state, world: int):
    """The ranks' states merged: top-k by value, histograms by adding their counts."""
    if world == 1:
        return state["tops"], state["hists"], state["skipped"], state["rel_tops"]
    tops, rel_tops = _gather_tops(state["tops"], world), _gather_tops(state["rel_tops"], world)
    hists = {}
    for layer, hist in state["hists"].items():
        hist = hist.clone()
        dist.all_reduce(hist, op=dist.ReduceOp.SUM)  # integer counts: exact
        hists[layer] = hist
    skipped: List = [None] * world
    dist.all_gather_object(skipped, state["skipped"])
    return tops, hists, [s for part in skipped for s in part], rel_tops



def _gather_tops(state_tops, world: int):
    tops = {}
    for layer, t in state_tops.items():
        gathered = {}
        for key, value in t.items():
            parts = [torch.empty_like(value) for _ in range(world)]
            dist.all_gather(parts, value.contiguous())
            gathered[key] = torch.cat(parts, dim=1)
        channels, k = t["values"].shape
        tops[layer] = merge(empty_tops(channels, k, t["values"].device), gathered, k)
    return tops
