"""LXT 2.1's relevance for torchvision's ViT, used only by the tests (an independent oracle).

LXT (Achtibat et al., ICML 2024) computes LRP as gradient times input with some backward
rules changed by patching the model's classes (``lxt.efficient.models.vit_torch``): GELU by
the identity rule, LayerNorm with its standard deviation detached, and inside
``nn.MultiheadAttention`` CP-LRP (queries and keys detached); the linear layers and
convolutions take zennit's ``Gamma`` through ``monkey_patch_zennit``, as LXT's
``examples/vit_torch.py`` does. For AttnLRP inside attention, LXT's own attention rule for
its transformers models (``lxt.efficient.patches.wrap_attention_forward``: queries' and
keys' gradients divided by 4, values' by 2, the softmax's gradient its own) wraps an eager
attention in a hand-written ``nn.MultiheadAttention.forward`` (its output projection by
``F.linear`` on ``out_proj``'s weights, as torch's does: zennit's hooks never see it).

LXT 2.1's package ``__init__`` imports its patches for Hugging Face models, which fail on
transformers 5 (``find_pruneable_heads_and_indices`` is gone); the ViT's files do not need
them, so :func:`_lxt` loads those files under a package stub. Every patch (LXT's on
torchvision's classes, zennit's on ``BasicHook``) is undone on leaving, errors included.
Nothing here shares code with deconvviz's engine.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types

import torch
import torch.nn.functional as F


def _lxt():
    """LXT's ``patches``, ``zennit_patches`` and ``models.vit_torch`` modules."""
    import lxt

    stubs = {}
    root = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    for name, path in (("lxt.efficient", root), ("lxt.efficient.models",
                                                  os.path.join(root, "models"))):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stubs[name] = stub
    try:
        return [importlib.import_module(f"lxt.efficient.{m}")
                for m in ("patches", "zennit_patches", "models.vit_torch")]
    finally:
        for name in stubs:
            del sys.modules[name]


@contextlib.contextmanager
def _patched(owner, **methods):
    """Set ``owner``'s attributes for the block; put back (or delete) on leaving."""
    missing = object()
    before = {k: owner.__dict__.get(k, missing) for k in methods}
    try:
        for k, v in methods.items():
            setattr(owner, k, v)
        yield
    finally:
        for k, v in before.items():
            if v is missing:
                delattr(owner, k)
            else:
                setattr(owner, k, v)


def _eager(module, query, key, value, *args, **kwargs):
    weights = torch.softmax(query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5, dim=-1)
    return weights @ value


def _attnlrp_forward(attention):
    """``nn.MultiheadAttention.forward`` for a ViT (self-attention, no masks), with LXT's
    AttnLRP ``attention`` in place of ``scaled_dot_product_attention``."""
    def forward(self, query, key, value, need_weights=True, **kwargs):
        assert not kwargs.get("attn_mask") and not kwargs.get("key_padding_mask")
        x = query.transpose(0, 1) if self.batch_first else query  # [L, N, E]
        length, n, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(length, n, self.num_heads, -1).permute(1, 2, 0, 3)
                   for t in (q, k, v))
        out = attention(self, q, k, v).permute(2, 0, 1, 3).reshape(length, n, dim)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        return (out.transpose(0, 1) if self.batch_first else out), None
    return forward


def lxt_relevance(model, x, target, *, attention="conservative", conv_gamma=None,
                  lin_gamma=None, stabilizer=1e-9):
    """LXT's relevance of ``model(x)[:, target]`` at the pixels, ``[N, 3, H, W]``
    (``attention``: ``"conservative"``, LXT's ``vit_torch``; ``"softmax"``, AttnLRP's).
    ``conv_gamma``, ``lin_gamma``: zennit's ``Gamma`` on the convolutions and linear layers
    (LXT's ``examples/vit_torch.py``); ``None``: none, LXT's gradient times input alone (the
    ε rule without ε)."""
    import zennit.rules as z_rules
    from torch import nn
    from zennit.composites import LayerMapComposite
    from zennit.core import BasicHook

    patches, zennit_patches, _ = _lxt()
    gelu = nn.GELU.forward
    mha = nn.MultiheadAttention.forward
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(nn.GELU, forward=patches.non_linear_forward,
                                     original_forward=gelu))
        stack.enter_context(_patched(nn.LayerNorm, forward=patches.layer_norm_forward))
        stack.enter_context(_patched(BasicHook, forward=zennit_patches.forward,
                                     backward=zennit_patches.backward))
        if attention == "conservative":
            stack.enter_context(_patched(nn.MultiheadAttention, original_forward=mha,
                                         forward=patches.cp_multi_head_attention_forward))
        else:
            attention = patches.wrap_attention_forward(_eager)
            stack.enter_context(_patched(nn.MultiheadAttention,
                                         forward=_attnlrp_forward(attention)))
        composite = LayerMapComposite(
            [(kind, z_rules.Gamma(gamma, stabilizer=stabilizer))
             for kind, gamma in ((nn.Conv2d, conv_gamma), (nn.Linear, lin_gamma))
             if gamma is not None])
        xx = x.detach().clone().requires_grad_(True)
        with composite.context(model), torch.enable_grad():
            y = model(xx)
            y[:, target].sum().backward()
    return (xx * xx.grad).detach()
