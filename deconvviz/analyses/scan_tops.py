"""A scan's running top-k per feature: each batch's candidates, merged so that the order in
which images arrive never matters (ties broken by the image's position in the list)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

__all__ = ["empty_tops", "merge", "candidates", "KEYS"]


KEYS = ("values", "images", "ys", "xs", "runner_ups")



def empty_tops(channels: int, k: int, device) -> Dict[str, Tensor]:
    return {"values": torch.full((channels, k), float("-inf"), device=device),
            "images": torch.full((channels, k), -1, dtype=torch.long, device=device),
            "ys": torch.zeros((channels, k), dtype=torch.long, device=device),
            "xs": torch.zeros((channels, k), dtype=torch.long, device=device),
            "runner_ups": torch.full((channels, k), float("-inf"), device=device)}



def merge(tops: Dict[str, Tensor], candidates: Dict[str, Tensor], k: int) -> Dict[str, Tensor]:
    """Merge candidates ``[C, M]`` into the running top-k ``[C, k]``: strongest first, ties
    broken by the image's position in the list (so the order of arrival never matters)."""
    merged = {key: torch.cat([tops[key], candidates[key]], dim=1) for key in KEYS}
    by_image = torch.argsort(merged["images"], dim=1, stable=True)
    merged = {key: t.gather(1, by_image) for key, t in merged.items()}
    by_value = torch.argsort(merged["values"], dim=1, descending=True, stable=True)[:, :k]
    return {key: t.gather(1, by_value) for key, t in merged.items()}



def candidates(act: Tensor, indices: Tensor) -> Dict[str, Tensor]:
    """Each image's strongest location per feature, as ``[C, B]`` tensors: its value, image
    id, row, column, and the strongest value elsewhere in the same map (``runner_ups``: a
    position tie within one image shows there). A location whose activation is not positive
    is not a hit: it becomes an empty slot (value ``-inf``, image ``-1``). ``strongest``
    (``[B, C]``) keeps every image's strongest value, fired or not, for the distribution."""
    b, c = act.shape[:2]
    flat = act.reshape(b, c, -1)
    values, pos = flat.max(dim=2)  # the first maximum on exact ties, as documented
    if flat.shape[2] > 1:
        runner_ups = flat.scatter(2, pos.unsqueeze(2), float("-inf")).amax(dim=2)
    else:
        runner_ups = torch.full_like(values, float("-inf"))
    width = act.shape[-1] if act.dim() == 4 else 1
    images = indices.to(act.device).reshape(b, 1).expand(b, c)
    fired = values > 0
    return {"values": torch.where(fired, values, float("-inf")).T,
            "images": torch.where(fired, images, -1).T,
            "ys": (pos // width).T, "xs": (pos % width).T, "runner_ups": runner_ups.T,
            "strongest": values}  # [B, C], fired or not: the distribution counts every image
