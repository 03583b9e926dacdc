"""LRP through attention and other products of two signals taken as one op (``matmul``).

The rule is conservative propagation (Ali et al. 2022, "XAI for Transformers: Better
Explanations through Conservative Propagation"): an attention map, the output of a softmax,
is a constant of the recorded input, as a squeeze-excitation gate is, so relevance goes down
the values only, by the z-rule of the linear map they then go through. Inside an op that
holds a whole attention (``nn.MultiheadAttention``, torchvision's
``shifted_window_attention``) every softmax is held at its recorded value; in a traced
graph, a ``matmul`` whose factor comes through a softmax takes that factor as a constant.
With the biases zero, relevance is conserved through attention (AttnLRP's softmax rule,
``x·(R − s·ΣR)``, is not: the relevance it sends into the queries and keys is not the
relevance it receives). A ``matmul`` of two signals without a softmax gives each factor half
of the z-rule's share (AttnLRP's uniform rule).
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["SoftmaxHeld", "MATMULS", "softmax_factor", "holds_softmax"]

SOFTMAXES = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}
_SOFTMAX_TARGETS = {F.softmax, torch.softmax, "softmax"}
MATMULS = {torch.matmul, operator.matmul, torch.bmm, "matmul", "bmm"}
# ops on the way from a softmax to the product that keep it the attention map
_THROUGH = {F.dropout, torch.reshape, torch.transpose, "view", "reshape", "transpose",
            "permute", "contiguous", "to", "type_as", "float", "half", "double"}


class SoftmaxHeld(TorchFunctionMode):
    """Every softmax computed inside returns its value detached: a constant of the input
    (``scaled_dot_product_attention`` too, written out with its weights held)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _attention_held(*args, **kwargs)
        out = func(*args, **kwargs)
        return out.detach() if func in SOFTMAXES else out


def _attention_held(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                    scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` (eval: no dropout) with its weights a constant."""
    with torch.no_grad():
        logits = query @ key.transpose(-2, -1) * (scale or query.shape[-1] ** -0.5)
        if is_causal:
            causal = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill(~causal.tril(), float("-inf"))
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf")) \
                if attn_mask.dtype == torch.bool else logits + attn_mask
        weights = torch.softmax(logits, dim=-1)
    return weights @ value


def holds_softmax(op) -> bool:
    """Whether ``op`` is an opaque op (a module or a function) that may hold a softmax inside,
    rather than a softmax itself."""
    if op.node.op == "call_module":
        return True
    return op.node.op == "call_function" and op.node.target not in _SOFTMAX_TARGETS


def _target(node: fx.Node):
    return node.target if node.op in ("call_function", "call_method") else None


def softmax_factor(op) -> Optional[fx.Node]:
    """For a ``matmul`` of two signals: the factor that comes through a softmax, if one
    does (through dropout, reshapes and transposes)."""
    if _target(op.node) not in MATMULS or len(op.node.args) < 2:
        return None
    for factor in op.node.args[:2]:
        node = factor
        while isinstance(node, fx.Node) and _target(node) is not None:
            if _target(node) in _SOFTMAX_TARGETS:
                return factor
            if _target(node) not in _THROUGH:
                break
            node = node.args[0] if node.args else None
    return None
