"""Seeds of a reverse pass: which activations of a layer start it.

:func:`make_seeds` keeps, for each chosen feature, its strongest unit (``max``) or its whole
map (``map``); :func:`strongest` finds each feature's strongest unit; the checks turn a user's
feature list or seed tensor into what the projector runs.
"""
from __future__ import annotations

import operator
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ...errors import ArgumentError
from .tokens import TokenGrid

__all__ = ["make_seeds", "strongest", "token_seeds", "Feature"]

Feature = Union[int, Sequence[int]]
"""A feature index, or a list of them."""


def make_seeds(act: Tensor, features: Sequence[int], mode: str) -> Tensor:
    """Seeds ``[N, K, C, ...]`` for ``features`` of activation ``act`` ``[N, C, ...]``.

    ``max``: only the strongest unit of each feature's map keeps its value (first in
    row-major order on ties); ``map``: the feature's whole map keeps its values.
    """
    n, c = act.shape[:2]
    idx = torch.as_tensor(list(features), dtype=torch.long, device=act.device)
    k = len(idx)
    flat = act.reshape(n, c, -1)
    seeds = flat.new_zeros(n, k, c, flat.shape[2])
    chosen = flat[:, idx]  # [N, K, hw]
    if mode == "max":
        pos = chosen.argmax(dim=2, keepdim=True)  # first maximum on ties
        values = torch.zeros_like(chosen).scatter_(2, pos, chosen.gather(2, pos))
    else:
        values = chosen
    seeds[:, torch.arange(k, device=act.device), idx] = values
    return seeds.reshape(n, k, *act.shape[1:])


def token_seeds(grid: Optional[TokenGrid], rec, layer: str, features: Sequence[int],
                token: str, mode: str) -> Callable[[int, int], Tuple[Tensor, Tensor]]:
    """Seeds of ``features`` at a named token (``"cls"``) of a ViT's token layer (``grid``:
    its :class:`TokenGrid`), each unit seeded with its own value: ``make(k0, k1)`` gives
    ``(zeros on the patch grid [N, K, C, H, W], the named tokens' seeds [N, K, P, C])``."""
    if grid is None or not grid.prefix:
        raise ArgumentError(f"token {token!r}: layer {layer!r} has no named tokens (it is "
                            f"not a vision transformer's token layer with a class token); "
                            f"project its features without a token")
    if token not in grid.prefix:
        raise ArgumentError(f"layer {layer!r} has no token {token!r}; its named tokens are "
                            f"{', '.join(grid.prefix)}")
    if mode != "max":
        raise ArgumentError("a token's unit is one activation per feature: project it in "
                            "mode 'max', not 'map'")
    named, act, index = rec.named_tokens[layer], rec.activations[layer], grid.index(token)

    def make(k0: int, k1: int) -> Tuple[Tensor, Tensor]:
        part = torch.as_tensor(list(features[k0:k1]), device=named.device)
        ks = torch.arange(len(part), device=named.device)
        seeds = named.new_zeros(named.shape[0], len(part), *named.shape[1:])
        seeds[:, ks, index, part] = named[:, index, part]
        return act.new_zeros(act.shape[0], len(part), *act.shape[1:]), seeds

    return make


def strongest(act: Tensor, features: Sequence[int]) -> Tuple[Tensor, Tensor, Tensor]:
    """For each image and feature: the strongest activation's value, row and column.

    Returns three ``[N, K]`` tensors; rows/columns are 0 for fully-connected layers.
    """
    n, c = act.shape[:2]
    idx = torch.as_tensor(list(features), dtype=torch.long, device=act.device)
    flat = act.reshape(n, c, -1)[:, idx]
    values, pos = flat.max(dim=2)
    width = act.shape[-1] if act.dim() == 4 else 1
    return values, pos // width, pos % width


def _check_features(feature: Feature, channels: int, layer: str) -> Tuple[List[int], bool]:
    accepted = (f"give a feature index (an int from 0 to {channels - 1}) or a list of them")
    if isinstance(feature, (str, bytes)) or feature is None:
        raise ArgumentError(f"feature {feature!r} is not an index: {accepted}")
    single = not hasattr(feature, "__iter__") or (isinstance(feature, Tensor)
                                                  and feature.dim() == 0)
    items = [feature] if single else list(feature)
    out = []
    for f in items:
        try:  # ints, NumPy ints and integer 0-d tensors; not floats, strings or bools
            if isinstance(f, bool):
                raise TypeError
            f = operator.index(f)
        except TypeError:
            raise ArgumentError(f"feature {f!r} is not an index: {accepted}") from None
        if not 0 <= f < channels:
            raise ArgumentError(f"feature {f!r} is out of range for layer {layer!r}: "
                                f"valid features are 0 to {channels - 1}")
        out.append(f)
    if not out:
        raise ArgumentError("feature list is empty")
    return out, single


def _check_seed(seed: Tensor, act: Tensor) -> Tuple[Tensor, bool]:
    if not isinstance(seed, Tensor):
        raise ArgumentError(f"seed must be a tensor, got {type(seed).__name__}")
    if tuple(seed.shape) == tuple(act.shape):
        return seed.to(act).unsqueeze(1), True
    if seed.dim() == act.dim() + 1 and seed.shape[0] == act.shape[0] \
            and tuple(seed.shape[2:]) == tuple(act.shape[1:]):
        return seed.to(act), False
    raise ArgumentError(f"seed has shape {list(seed.shape)}; it must match the layer's "
                        f"activation {list(act.shape)} (or [N, K, {', '.join(map(str, act.shape[1:]))}])")
