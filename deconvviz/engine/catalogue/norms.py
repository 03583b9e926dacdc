"""Normalisations over channels or groups: LayerNorm, GroupNorm, RMSNorm (modules and functions).

Their registered reverse is the exact vector-Jacobian product at the recorded input (what
every op no rule claims takes), so the deconvnet, guided backprop and the gradient treat them
as before. LRP takes AttnLRP's rule for them (Achtibat et al. 2024, as LXT implements it; Ali
et al. 2022 before it): the standard deviation (for RMSNorm, the root mean square) is a
constant of the recorded input, so the normalisation is the affine map

    x -> (x - mean(x)) / std_recorded * w + b       (RMSNorm: x / rms_recorded * w)

and relevance goes through it by the ε rule: ``x * Jᵀ(R / y)``. With ``b = 0`` it conserves
relevance (``J x = y``); RMSNorm passes it through unchanged. :func:`detached_norm` builds the
map; :mod:`deconvviz.engine.catalogue.lrp` applies the rule.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .pointwise import _exact_vjp
from .rules import Rule, Unsupported, register_rule

__all__ = ["NORM_MODULES", "detached_norm"]

_RMS_NORM = getattr(nn, "RMSNorm", None)
NORM_MODULES = tuple(m for m in (nn.LayerNorm, nn.GroupNorm, _RMS_NORM) if m is not None)
_FUNCTIONS = tuple(f for f in (F.layer_norm, F.group_norm, getattr(F, "rms_norm", None))
                   if f is not None)
_KIND = {nn.LayerNorm: "layer", nn.GroupNorm: "group", F.layer_norm: "layer",
         F.group_norm: "group"}
if _RMS_NORM is not None:
    _KIND[_RMS_NORM] = "rms"
    _KIND[F.rms_norm] = "rms"


def _parse_norm(call):
    first = call.node.args[0] if call.node.args else None
    if any(n is not first for n in call.inputs):  # a weight computed from the image
        raise Unsupported(f"{call.name} with computed arguments")
    if call.kind == "module":
        m = call.module
        what = (f"GroupNorm({m.num_groups}, {m.num_channels})" if isinstance(m, nn.GroupNorm)
                else f"{type(m).__name__}({tuple(m.normalized_shape)})")
        return what, {"norm": _KIND[type(m)]}
    return f"{call.name} (functional)", {"norm": _KIND[call.target]}


register_rule(Rule(
    kind="norm", description="its exact vector-Jacobian product at the recorded point "
                             "(autograd)",
    reverse=_exact_vjp, modules=NORM_MODULES, functions=_FUNCTIONS, parse=_parse_norm,
    needs=frozenset({"arguments"})))


def _arguments(op, values: Dict[fx.Node, Any]) -> Dict[str, Any]:
    """The normalisation's arguments by name (a module's from its attributes)."""
    if op.node.op == "call_module":
        m = op.module
        if isinstance(m, nn.GroupNorm):
            return dict(groups=m.num_groups, weight=m.weight, bias=m.bias, eps=m.eps)
        return dict(shape=tuple(m.normalized_shape), weight=m.weight,
                    bias=getattr(m, "bias", None), eps=m.eps)
    args = fx.node.map_arg(op.node.args, lambda n: values[n])
    kwargs = fx.node.map_arg(op.node.kwargs, lambda n: values[n])
    names = {"layer": ("input", "shape", "weight", "bias", "eps"),
             "group": ("input", "groups", "weight", "bias", "eps"),
             "rms": ("input", "shape", "weight", "eps")}[op.params["norm"]]
    renamed = {"normalized_shape": "shape", "num_groups": "groups"}
    bound = dict(zip(names, args))
    bound.update({renamed.get(k, k): v for k, v in kwargs.items()})
    bound.setdefault("eps", None if op.params["norm"] == "rms" else 1e-5)
    bound.pop("input", None)
    if "shape" in bound:
        shape = bound["shape"]
        bound["shape"] = (shape,) if isinstance(shape, int) else tuple(shape)
    return bound


def _scaled(t: Tensor, weight, bias, channel_axis: bool) -> Tensor:
    def fit(p):
        return p.reshape(1, -1, *([1] * (t.dim() - 2))) if channel_axis else p
    if weight is not None:
        t = t * fit(weight)
    return t if bias is None else t + fit(bias)


def detached_norm(op, values: Dict[fx.Node, Any], x: Tensor) -> Callable[[Tensor], Tensor]:
    """The normalisation ``op`` as the affine map it is with its statistic (standard
    deviation, root mean square) held at its value on the recorded input ``x``."""
    kind, a = op.params["norm"], _arguments(op, values)
    x = x.detach()
    if kind == "group":
        n, groups = x.shape[0], a["groups"]
        std = (x.reshape(n, groups, -1).var(-1, unbiased=False, keepdim=True) + a["eps"]).sqrt()

        def group(t):
            tg = t.reshape(n, groups, -1)
            return _scaled(((tg - tg.mean(-1, keepdim=True)) / std).reshape(t.shape),
                           a["weight"], a["bias"], True)
        return group
    dims = tuple(range(-len(a["shape"]), 0))
    if kind == "rms":
        eps = a["eps"] if a["eps"] is not None else torch.finfo(x.dtype).eps
        rms = (x.pow(2).mean(dims, keepdim=True) + eps).sqrt()
        return lambda t: _scaled(t / rms, a["weight"], None, False)
    std = (x.var(dims, unbiased=False, keepdim=True) + a["eps"]).sqrt()
    return lambda t: _scaled((t - t.mean(dims, keepdim=True)) / std, a["weight"], a["bias"],
                             False)
