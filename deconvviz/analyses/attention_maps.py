"""Maps read from a vision transformer's attention: attention rollout and Chefer et al.'s
gradient-weighted attention, each a class's map on the patch grid upsampled to the image.

- ``attention_rollout`` (Abnar & Zuidema 2020, "Quantifying Attention Flow in
  Transformers"): each layer's attention averaged over its heads, the residual added as the
  identity and the rows renormalised, ``Â = (A + I) / 2``; the layers' product
  ``Â_L ⋯ Â_1``; the map is the class token's row over the patches. It reads no gradient:
  every class gets the same map (the target is accepted and ignored).
- ``chefer_gae`` (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability",
  the rule their public ViT code applies; their CVPR 2021 paper weighs LRP relevance of the
  attention instead of the attention itself): ``Ā = mean over heads of (∇A ⊙ A)⁺`` with
  ``∇A`` the gradient of the class logit, ``R ← R + Ā R`` from ``R = I``, layer by layer; the
  map is ``R``'s class-token row over the patches.

Both take the attention where it is computed: ``scaled_dot_product_attention`` (timm's
ViT and DeiT), ``nn.MultiheadAttention`` (torchvision's ViT; written out, as its body
would hide the attention from a torch-function mode) or a softmax over the last axis of a
square ``[N, heads, T, T]`` map (attention written by hand). The tokens are the prefix
tokens (class, distillation, registers; the class token first) and the patch grid, whose
shape is the image's aspect: the map is the grid's, upsampled bilinearly to the image and
scaled to [0, 1] per image, as the CAMs are. A model without such attention (Swin's windows,
a CNN) is refused.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..engine.catalogue.lrp_attention import multi_head_attention
from ..errors import ArgumentError
from .cams import scale

__all__ = ["ATTENTION_METHODS", "attention_map"]

ATTENTION_METHODS = ("attention_rollout", "chefer_gae")
_SOFTMAXES = {F.softmax, torch.softmax, torch.Tensor.softmax}


class _Recorder(TorchFunctionMode):
    """Every attention computed inside keeps its weights ``[N, heads, T, T]`` in ``maps``
    (in the graph: their gradient is the logit's)."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: List[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return multi_head_attention(self._attention, *args, **kwargs)
        out = func(*args, **kwargs)
        if func in _SOFTMAXES and out.dim() == 4 and out.shape[-1] == out.shape[-2] and \
                _last_axis(args, kwargs, out.dim()):
            self.maps.append(out)
        return out

    def _attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                   scale=None, enable_gqa=False):
        if attn_mask is not None or is_causal:
            raise ArgumentError("attention rollout and Chefer et al.'s map read unmasked "
                                "self-attention; this model masks its attention")
        weights = torch.softmax(query @ key.transpose(-2, -1)
                                * (scale or query.shape[-1] ** -0.5), dim=-1)
        self.maps.append(weights)
        return weights @ value


def _last_axis(args, kwargs, dims: int) -> bool:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim is not None and dim % dims == dims - 1


def _grid(tokens: int, size: Tuple[int, int]) -> Tuple[int, int, int]:
    """``(prefix tokens, grid rows, grid columns)`` of ``tokens`` on an image of ``size``."""
    for prefix in range(1, 9):
        n = tokens - prefix
        rows = math.isqrt(max(n * size[0] // size[1], 0)) if n > 0 else 0
        for r in (rows, rows + 1):
            if r and n % r == 0 and size[0] % r == 0 and size[1] % (n // r) == 0 \
                    and size[0] // r == size[1] // (n // r):
                return prefix, r, n // r
    raise ArgumentError(f"no patch grid of the image's aspect in {tokens} tokens after a "
                        f"class token: attention rollout and Chefer et al.'s map need a "
                        f"ViT-style class token over a patch grid: n/a")


def _recorded(model: nn.Module, x: Tensor, classes: List[int], gradients: bool):
    recorder = _Recorder()
    with torch.enable_grad() if gradients else torch.no_grad(), recorder:
        logits = model(x)
    maps = recorder.maps
    if not maps or any(a.shape[0] != x.shape[0] or a.shape[-1] != maps[0].shape[-1]
                       for a in maps):
        raise ArgumentError("attention rollout and Chefer et al.'s map need global "
                            "self-attention over one set of tokens in every layer (a ViT, "
                            "DeiT); this model has none (or windows, as Swin's): n/a")
    if not gradients:
        return maps, None
    rows = torch.arange(x.shape[0], device=x.device)
    score = logits[rows, torch.as_tensor(classes, device=x.device)].sum()
    return maps, torch.autograd.grad(score, maps)


def attention_map(model: nn.Module, x: Tensor, method: str, classes: List[int],
                  grid: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """``method``'s map (one of :data:`ATTENTION_METHODS`) of each image's class:
    ``[N, 1, H, W]`` in [0, 1]. ``grid``: ``(prefix tokens, rows, columns)`` as the traced
    graph gives them (the token layers' patch grid); ``None``: found from the token count
    and the image's aspect."""
    if method not in ATTENTION_METHODS:
        raise ArgumentError(f"unknown attention map {method!r}; choose from "
                            f"{', '.join(ATTENTION_METHODS)}")
    gae = method == "chefer_gae"
    maps, grads = _recorded(model, x, classes, gradients=gae)
    tokens = maps[0].shape[-1]
    if grid is None or grid[0] + grid[1] * grid[2] != tokens:
        grid = _grid(tokens, tuple(x.shape[-2:]))
    prefix, rows, cols = grid
    eye = torch.eye(tokens, dtype=maps[0].dtype, device=maps[0].device).expand(
        x.shape[0], tokens, tokens)
    flow = eye.clone()
    with torch.no_grad():
        for i, a in enumerate(maps):
            if gae:
                flow = flow + (grads[i] * a).clamp_min(0).mean(1) @ flow
            else:
                flow = (a.mean(1) + eye) / 2 @ flow
    grid = flow[:, 0, prefix:].reshape(-1, 1, rows, cols)
    up = F.interpolate(grid, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return scale(up[:, 0])[:, None]
