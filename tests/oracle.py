"""An independent oracle for the deconvnet, used only by the tests.

Zeiler & Fergus's deconvnet equals the gradient of (seed . activation) with respect to the
input in which exactly two backward rules change: every ReLU passes relu(signal) instead of
masking by the forward input, and local response normalisation passes the signal unchanged.
This module computes that gradient with plain autograd, intercepting every ReLU and LRN call
with a TorchFunctionMode, and reads the layer's activation with a forward hook. It shares no
code with deconvviz's engine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


class _DeconvReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _GuidedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * ((x > 0) & (x < 6))


def _is_relu6(func, args, kwargs):
    if func is F.relu6:
        return True
    if func is F.hardtanh:
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return (float(low), float(high)) == (0.0, 6.0)
    return False


class DeconvRules(TorchFunctionMode):
    """Inside this mode, ReLU's backward rectifies the signal and LRN's backward is identity
    (the deconvnet); with ``method="guided"``, ReLU's backward is guided backprop's and LRN
    keeps its true gradient; with ``method="gradient"``, nothing changes."""

    def __init__(self, method="deconvnet"):
        super().__init__()
        self.method = method

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS and self.method != "gradient":
            relu = _DeconvReLU if self.method == "deconvnet" else _GuidedReLU
            return relu.apply(args[0])
        if _is_relu6(func, args, kwargs) and self.method != "gradient":
            relu6 = _DeconvReLU6 if self.method == "deconvnet" else _GuidedReLU6
            return relu6.apply(args[0])
        if func is F.local_response_norm and self.method == "deconvnet":
            x = args[0]
            y = F.local_response_norm(*args, **kwargs)
            return x + (y - x).detach()
        return func(*args, **kwargs)


class _Stop(Exception):
    pass


def oracle_project(model, x, module_path, features, mode="max", call=0, method="deconvnet"):
    """Projections [N, K, 3, H, W] of ``features`` of the output of ``module_path``, by
    ``method`` (deconvnet, guided or gradient): one recorded forward pass, one backward pass
    per feature."""
    module = model.get_submodule(module_path) if module_path else model
    captured = []

    def hook(mod, inputs, output):
        captured.append(output)
        if len(captured) > call:
            raise _Stop

    xx = x.detach().clone().requires_grad_(True)
    handle = module.register_forward_hook(hook)
    try:
        with DeconvRules(method), torch.enable_grad():
            try:
                model(xx)
            except _Stop:
                pass
    finally:
        handle.remove()
    act = captured[call]
    results = []
    for f in features:
        seed = torch.zeros_like(act)
        for n in range(act.shape[0]):
            channel = act[n, f].detach()
            if mode == "max":
                pos = int(torch.argmax(channel.reshape(-1)))
                seed[n, f].view(-1)[pos] = channel.reshape(-1)[pos]
            else:
                seed[n, f] = channel
        (grad,) = torch.autograd.grad((seed * act).sum(), xx, allow_unused=True,
                                      retain_graph=True)
        results.append(torch.zeros_like(x) if grad is None else grad)
    return torch.stack(results, dim=1)


def plain_gradient(model, x, module_path, feature):
    """The ordinary gradient of the strongest activation of ``feature`` (no deconv rules)."""
    from conftest import captured_outputs

    xx = x.detach().clone().requires_grad_(True)
    with captured_outputs(model.get_submodule(module_path)) as captured, torch.enable_grad():
        model(xx)
    act = captured[0]
    flat = act[:, feature].reshape(act.shape[0], -1)
    return torch.autograd.grad(flat.max(dim=1).values.sum(), xx)[0]


def rel_error(a, b):
    """max |a - b| / max |b| (0 when both are all-zero)."""
    scale = b.abs().max()
    if scale == 0:
        return float(a.detach().abs().max())
    return float((a - b).detach().abs().max() / scale)
