"""LRP through attention and other products of two signals taken as one op (``matmul``).

A composite's ``attention`` names the rule (:data:`deconvviz.lrp_vocabulary.ATTENTION_RULES`).
``"softmax"`` is AttnLRP's (Achtibat et al. 2024, as LXT 2.1 writes it in the
gradient-times-input form): the softmax takes its own linearisation, ``x·(R − s·ΣR)``, and
each product of two signals gives each factor half (the uniform rule): inside an op that
holds a whole attention, :class:`AttentionSplit` runs ``scaled_dot_product_attention`` with
the gradients of queries and keys divided by 4 and of values by 2 (LXT's
``wrap_attention_forward``) and halves both factors of any other product of two signals.
``"conservative"`` (CP-LRP, the default and LXT's choice for torchvision's ViT) is
conservative propagation (Ali et al. 2022, "XAI for Transformers: Better
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

import contextlib
import inspect
import operator
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ...errors import UnsupportedOpError

__all__ = ["SoftmaxHeld", "AttentionSplit", "MATMULS", "softmax_factor", "holds_softmax",
           "multi_head_attention"]

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
            return _attention_written_out(*args, held=True, **kwargs)
        if func is F.multi_head_attention_forward:
            return multi_head_attention(_held_sdpa, *args, **kwargs)
        out = func(*args, **kwargs)
        return out.detach() if func in SOFTMAXES else out


class _GradScale(torch.autograd.Function):
    """The identity, with its gradient multiplied by ``factor`` (LXT's ``divide_gradient``)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _scaled(x, factor):
    return _GradScale.apply(x, factor)


_PRODUCTS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
             torch.Tensor.bmm}


def _signal(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and not isinstance(t, torch.nn.Parameter)


class AttentionSplit(TorchFunctionMode):
    """AttnLRP's rules inside an op: ``scaled_dot_product_attention`` with the gradient of
    its queries and keys divided by 4 and of its values by 2, the softmax's gradient its own
    (the softmax rule in the gradient-times-input form); any other product of two signals
    (``matmul``, ``bmm``, ``baddbmm``) gives each factor half."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _split_sdpa(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return multi_head_attention(_split_sdpa, *args, **kwargs)
        if func in _PRODUCTS and len(args) >= 2 and _signal(args[0]) and _signal(args[1]):
            return func(_scaled(args[0], 0.5), _scaled(args[1], 0.5), *args[2:], **kwargs)
        if func is torch.baddbmm and len(args) >= 3 and _signal(args[1]) and _signal(args[2]):
            return func(args[0], _scaled(args[1], 0.5), _scaled(args[2], 0.5), *args[3:],
                        **kwargs)
        return func(*args, **kwargs)


def _attention_written_out(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                           scale=None, enable_gqa=False, held=False):
    """``scaled_dot_product_attention`` (eval: no dropout) in plain ops; ``held``: its
    weights a constant."""
    with torch.no_grad() if held else contextlib.nullcontext():
        logits = query @ key.transpose(-2, -1) * (scale or query.shape[-1] ** -0.5)
        if is_causal:
            causal = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill(~causal.tril(), float("-inf"))
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf")) \
                if attn_mask.dtype == torch.bool else logits + attn_mask
        weights = torch.softmax(logits, dim=-1)
    return weights @ value


def _held_sdpa(query, key, value, *args, **kwargs):
    return _attention_written_out(query, key, value, *args, held=True, **kwargs)


def _split_sdpa(query, key, value, *args, **kwargs):
    return _attention_written_out(_scaled(query, 0.25), _scaled(key, 0.25),
                                  _scaled(value, 0.5), *args, **kwargs)


def multi_head_attention(sdpa, *args, **kwargs):
    """``F.multi_head_attention_forward`` (eval, no masks) with its attention ``sdpa``.

    A torch-function mode sees ``nn.MultiheadAttention``'s functional form as one call and
    runs its body with the mode off, so the attention inside would escape the rule: the
    body is written out here instead."""
    a = inspect.signature(F.multi_head_attention_forward).bind(*args, **kwargs).arguments
    odd = [k for k in ("bias_k", "bias_v", "static_k", "static_v", "key_padding_mask",
                       "attn_mask") if a.get(k) is not None] + \
        [k for k in ("add_zero_attn", "is_causal") if a.get(k)]
    if odd or (a.get("training", True) and a["dropout_p"] > 0):
        raise UnsupportedOpError(f"nn.MultiheadAttention with {', '.join(odd) or 'dropout'} "
                                 f"is not written out for LRP's attention rules, rollout or "
                                 f"GAE: deconvviz writes out the unmasked self-attention of "
                                 f"vision transformers (eval mode)")
    query, key, value, heads = a["query"], a["key"], a["value"], a["num_heads"]
    batched = query.dim() == 3
    if not batched:
        query, key, value = (t.unsqueeze(1) for t in (query, key, value))
    if a.get("use_separate_proj_weight"):
        weights = a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"]
    else:
        weights = a["in_proj_weight"].chunk(3)
    bias = a["in_proj_bias"]
    biases = bias.chunk(3) if bias is not None else (None,) * 3
    length, n, dim = query.shape

    def heads_of(t, w, b):  # [L, N, E] -> [N, heads, L, E / heads]
        t = F.linear(t, w, b)
        return t.reshape(t.shape[0], n, heads, -1).permute(1, 2, 0, 3)

    q, k, v = (heads_of(t, w, b) for t, w, b in zip((query, key, value), weights, biases))
    out = sdpa(q, k, v).permute(2, 0, 1, 3).reshape(length, n, dim)
    out = F.linear(out, a["out_proj_weight"], a["out_proj_bias"])
    weights_out = None
    if a.get("need_weights", True):
        with torch.no_grad():
            w = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
            weights_out = w.mean(1) if a.get("average_attn_weights", True) else w
            weights_out = weights_out if batched else weights_out.squeeze(0)
    return (out if batched else out.squeeze(1)), weights_out


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
