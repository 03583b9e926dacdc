"""Noisy linear imputation's linear system, solved for a whole batch in torch.

Every removed pixel equals the weighted mean of its 8 neighbours in the image (weight 1/6
beside, 1/12 diagonal), the known ones fixed: ``A u = b`` with ``A = S - K`` restricted to
the removed pixels (``S``: each pixel's neighbour weights inside the image, ``K``: the
neighbours' weights), symmetric and positive definite wherever each removed region touches
a known pixel. It is solved by conjugate gradients preconditioned with one multigrid
V-cycle: coarse levels by Galerkin products ``P^T A P`` of 2x2 aggregation (the coarse
correction scaled by 1.5) (a 3x3 stencil with a coefficient per pixel and offset, on every
level) down to a side of at most 16, solved there by its dense inverse; one damped Jacobi
sweep before and after each coarse correction; all in float32. On the fine level, where
most of the work is, the product needs no coefficients per pixel (:class:`_Fine`: the
diagonal, minus the fixed weights' sum of the removed neighbours). The preconditioner is
symmetric (to float32 rounding), so the iteration is plain PCG, in float64 for tolerances
below 1e-6 (the exact imputation) and in float32 above (noisy imputation's, 100x below its
noise); it stops when every system's residual is below ``tolerance`` of its right-hand
side.
"""
from __future__ import annotations

from typing import Callable, List

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["solve", "TOLERANCE"]

TOLERANCE = 1e-9
MAX_ITERATIONS = 500
Operator = Callable[[Tensor], Tensor]
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_WEIGHT = {(dy, dx): (1 / 12 if dy and dx else 1 / 6) for dy, dx in _OFFSETS if dy or dx}
# Jacobi sweeps, their damping, the coarsest level's largest side, and the coarse
# correction's scale (aggregation's piecewise-constant prolongation undershoots smooth
# errors). Chosen by the fine level's products over 10-90 % removed of four 224-px images
# (benchmarks/README.md): 153 (scattered pixels) and 261 (smooth blobs) products, against
# 270 and 430 with two sweeps of damping 0.6, scaled by 1.8
_SMOOTH, _OMEGA, _COARSEST, _SCALE = 1, 0.9, 16, 1.5


def _overlap(dy: int, dx: int, h: int, w: int):
    """``(y0, y1, x0, x1)``: the pixels whose neighbour at ``(dy, dx)`` lies inside."""
    return max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)


def _apply(stencil: Tensor, u: Tensor) -> Tensor:
    """``sum_o stencil[:, o] * u[i + o]``: ``stencil`` ``[B, 9, H, W]``, ``u`` ``[B, C, H, W]``
    (each offset over the pixels whose neighbour lies inside: a stencil's coefficients
    towards the outside are 0)."""
    h, w = u.shape[-2:]
    out = stencil[:, 4:5] * u
    for k, (dy, dx) in enumerate(_OFFSETS):
        if k != 4:
            y0, y1, x0, x1 = _overlap(dy, dx, h, w)
            out[..., y0:y1, x0:x1].addcmul_(stencil[:, k:k + 1, y0:y1, x0:x1],
                                            u[..., y0 + dy:y1 + dy, x0 + dx:x1 + dx])
    return out


def _near(u: Tensor) -> Tensor:
    """``sum_o w_o u[i + o]``: each pixel's neighbours' weighted sum (0 outside)."""
    h, w = u.shape[-2:]
    out = torch.zeros_like(u)
    for (dy, dx), weight in _WEIGHT.items():
        y0, y1, x0, x1 = _overlap(dy, dx, h, w)
        out[..., y0:y1, x0:x1].add_(u[..., y0 + dy:y1 + dy, x0 + dx:x1 + dx], alpha=weight)
    return out


def fine_stencil(removed: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, 9, H, W]``: the system's stencil on the removed pixels ``[B, 1, H, W]``."""
    m = removed.to(dtype)
    h, w = m.shape[-2:]
    p = F.pad(m, (1, 1, 1, 1))
    parts = []
    for dy, dx in _OFFSETS:
        if (dy, dx) == (0, 0):
            parts.append(_diagonal(removed, dtype))
        else:
            parts.append(-_WEIGHT[(dy, dx)] * m * p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w])
    return torch.cat(parts, dim=1)


def _diagonal(removed: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, 1, H, W]``: each removed pixel's neighbour weights inside the image (1 inside,
    less at the borders), 0 where nothing is removed."""
    inside = torch.ones(1, 1, *removed.shape[-2:], dtype=dtype, device=removed.device)
    return _near(inside) * removed.to(dtype)


def _coarsen(stencil: Tensor) -> Tensor:
    """The Galerkin stencil ``P^T A P`` of 2x2 aggregates (odd sizes padded)."""
    b, _, h, w = stencil.shape
    s = F.pad(stencil, (0, w % 2, 0, h % 2)) if h % 2 or w % 2 else stencil
    hh, ww = s.shape[-2] // 2, s.shape[-1] // 2
    cells = s.view(b, 9, hh, 2, ww, 2)
    out = torch.zeros(b, 9, hh, ww, dtype=s.dtype, device=s.device)
    for k, (dy, dx) in enumerate(_OFFSETS):
        for py in (0, 1):
            for px in (0, 1):
                jy, jx = (py + dy) // 2, (px + dx) // 2
                out[:, (jy + 1) * 3 + (jx + 1)] += cells[:, k, :, py, :, px]
    return out


def _dense_inverse(stencil: Tensor) -> Tensor:
    """``[B, P, P]`` (P = H*W): the inverse of the coarsest level's matrix from its stencil
    ``[B, 9, H, W]``, 0 on the rows and columns of pixels with nothing removed (a zero
    diagonal)."""
    b, _, h, w = stencil.shape
    n = h * w
    rows = torch.arange(n).view(h, w)
    dense = torch.zeros(b, n, n, dtype=torch.float64, device=stencil.device)
    for k, (dy, dx) in enumerate(_OFFSETS):
        ys, xs = torch.arange(h)[:, None] + dy, torch.arange(w)[None, :] + dx
        inside = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w))
        i = rows[inside.expand(h, w)]
        j = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1))[inside.expand(h, w)]
        dense[:, i, j] += stencil[:, k].reshape(b, n)[:, i].double()
    empty = dense.diagonal(dim1=1, dim2=2) <= 0
    dense = dense + torch.diag_embed(empty.double())
    inverse = torch.linalg.inv(dense)
    keep = (~empty).double()
    return inverse * keep[:, :, None] * keep[:, None, :]


def _restrict(r: Tensor) -> Tensor:
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    return F.avg_pool2d(r, 2, divisor_override=1)


def _prolong(u: Tensor, shape) -> Tensor:
    return F.interpolate(u, scale_factor=2, mode="nearest")[..., :shape[0], :shape[1]]


class _Fine:
    """The fine level's ``A u`` for ``u`` zero outside the removed pixels:
    ``m (D u - sum_o w_o u[i + o])``, the stencil's structure (between removed pixels its
    coefficients are the fixed weights), which reads no per-pixel coefficients: about half
    :func:`_apply`'s time (equal to it, ``tests/test_metrics_road.py``)."""

    def __init__(self, removed: Tensor, dtype: torch.dtype):
        self.m = removed.to(dtype)
        self.d = _diagonal(removed, dtype)

    def __call__(self, u: Tensor) -> Tensor:
        return (self.d * u).sub_(_near(u)).mul_(self.m)


def _jacobi(op: Operator, inv: Tensor, u, b: Tensor, sweeps: int) -> Tensor:
    """``sweeps`` damped Jacobi sweeps from ``u`` (``None``: from zero, whose first sweep
    needs no product); ``inv`` is the damping over the diagonal (0 where nothing is
    removed, so ``u`` stays zero there), and ``u`` is updated in place."""
    if u is None:
        u, sweeps = inv * b, sweeps - 1
    for _ in range(sweeps):
        u = u.addcmul_(inv, b - op(u))
    return u


def _vcycle(ops: List[Operator], invs: List[Tensor], r: Tensor, mask: Tensor,
            at: int = 0) -> Tensor:
    """One symmetric V-cycle from zero: an approximation of ``A^-1 r`` on level ``at``
    (``ops[-1]``: the coarsest level's dense inverse; ``mask``: the removed pixels, where
    the fine level's correction may be non-zero)."""
    if at == len(ops) - 1:
        return ops[at](r)
    op, inv = ops[at], invs[at]
    u = _jacobi(op, inv, None, r, _SMOOTH)
    coarse = _vcycle(ops, invs, _restrict(r - op(u)), mask, at + 1)
    correction = _SCALE * _prolong(coarse, r.shape[-2:])
    u = u + (correction * mask if at == 0 else correction)
    return _jacobi(op, inv, u, r, _SMOOTH)


def _stencil_op(stencil: Tensor) -> Operator:
    return lambda u: _apply(stencil, u)


def _dense_op(inverse: Tensor) -> Operator:
    def apply(r: Tensor) -> Tensor:
        b, c, h, w = r.shape
        flat = r.reshape(b, c, h * w).transpose(1, 2)
        return torch.bmm(inverse, flat).transpose(1, 2).reshape(b, c, h, w)
    return apply


def solve(removed: Tensor, known: Tensor, tolerance: float = TOLERANCE) -> Tensor:
    """The removed pixels' values (0 elsewhere): ``removed`` ``[B, 1, H, W]`` bool,
    ``known`` ``[B, C, H, W]``, zero where removed; float64 arithmetic below a
    ``tolerance`` of 1e-6, float32 above (returned in that dtype)."""
    levels = [fine_stencil(removed)]  # float32: the preconditioner's
    while min(levels[-1].shape[-2:]) > _COARSEST:
        levels.append(_coarsen(levels[-1]))
    invs = [torch.where(s[:, 4:5] > 0, 1 / s[:, 4:5].clamp_min(1e-30),
                        torch.zeros_like(s[:, 4:5])) for s in levels[:-1]]
    # the preconditioner in float32 (half the memory traffic); the iteration in float64
    # where the tolerance needs it
    dtype = torch.float64 if tolerance < 1e-6 else torch.float32
    fine32 = _Fine(removed, torch.float32)
    fine = fine32 if dtype == torch.float32 else _Fine(removed, dtype)
    fast: List[Operator] = [_dense_op(_dense_inverse(levels[-1]).float())]
    if len(levels) > 1:  # else the image is its own coarsest level: solved exactly
        fast = [fine32] + [_stencil_op(s) for s in levels[1:-1]] + fast
    fast_inv = [_OMEGA * i for i in invs]
    known = known.to(dtype)
    tiny = torch.finfo(dtype).tiny
    m = fine.m

    def precondition(r: Tensor) -> Tensor:
        return _vcycle(fast, fast_inv, r.float(), fine32.m).to(dtype) * m

    b = _near(known) * m  # the known neighbours' weighted values
    u = torch.zeros_like(known)
    r = b.clone()
    z = precondition(r)
    p = z
    rz = (r * z).flatten(2).sum(dim=2)
    limit = tolerance * b.flatten(2).norm(dim=2)
    for _ in range(MAX_ITERATIONS):
        if bool((r.flatten(2).norm(dim=2) <= limit).all()):
            break
        ap = fine(p)
        alpha = rz / (p * ap).flatten(2).sum(dim=2).clamp_min(tiny)
        u = u + alpha[..., None, None] * p
        r = r - alpha[..., None, None] * ap
        z = precondition(r)
        rz_new = (r * z).flatten(2).sum(dim=2)
        p = z + (rz_new / rz.clamp_min(tiny))[..., None, None] * p
        rz = rz_new
    return u * m
