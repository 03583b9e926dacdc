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

from deconvviz.engine.precision import rel_error  # noqa: F401  (max |a - b| / max |b|)

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

    def __init__(self, method="deconvnet", decisions=None):
        super().__init__()
        self.method = method
        self.decisions = None if decisions is None else iter(decisions)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.decisions is not None and func in _RELUS:
            mask = _next(self.decisions, "relu").to(args[0].device)
            return _MaskedReLU.apply(args[0], mask, self.method)
        if self.decisions is not None and _is_max_pool(func):
            switches = _next(self.decisions, "pool").to(args[0].device)
            x = args[0]
            out = x.flatten(2).gather(2, switches.flatten(2)).view(switches.shape)
            return (out, switches) if func.__name__ == "max_pool2d_with_indices" else out
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


class _MaskedReLU(torch.autograd.Function):
    """A ReLU whose mask is given (a decision recorded elsewhere), with the method's rule."""

    @staticmethod
    def forward(ctx, x, mask, method):
        ctx.save_for_backward(mask)
        ctx.method = method
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        if ctx.method == "deconvnet":
            return grad.clamp(min=0), None, None
        if ctx.method == "guided":
            return grad.clamp(min=0) * mask, None, None
        return grad * mask, None, None


_POOLS = ("_max_pool2d", "max_pool2d", "max_pool2d_with_indices")


def _is_max_pool(func):
    return getattr(func, "__name__", "") in _POOLS


def _next(decisions, kind):
    found, value = next(decisions)[:2]
    assert found == kind, f"decisions out of step: {found} where the model calls {kind}"
    return value


class RecordDecisions(TorchFunctionMode):
    """Records, in call order, each ReLU's mask (input > 0) and each 2-D max-pool's switches
    (the flat indices of its maxima), with the input they were taken from."""

    def __init__(self):
        super().__init__()
        self.decisions = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0]
            self.decisions.append(("relu", (x > 0).to(x.dtype).cpu(), x.detach().cpu()))
            return func(*args, **kwargs)
        if _is_max_pool(func):
            options = dict(kwargs, return_indices=True)
            out, switches = F.max_pool2d(*args[:6], **options)
            self.decisions.append(("pool", switches.cpu(), args[0].detach().cpu()))
            if func.__name__ == "max_pool2d_with_indices" or kwargs.get("return_indices"):
                return out, switches
            return out
        return func(*args, **kwargs)


def record_decisions(model, x):
    """The ReLUs' masks and max-pools' switches of ``model(x)`` (on x's device and dtype),
    as :class:`RecordDecisions` lists them."""
    mode = RecordDecisions()
    with torch.no_grad(), mode:
        model(x)
    return mode.decisions


def undecided(decisions, reference, tie=1e-4):
    """The decisions of ``decisions`` that differ from ``reference``'s (the same model's in
    float64) other than at a tie: a ReLU input, or two max-pool candidates, closer than
    ``tie`` of the largest input of that call. Returns ``[(call, kind, count, gap)]``."""
    wrong = []
    for call, ((kind, ours, _), (_, theirs, x)) in enumerate(zip(decisions, reference)):
        x = x.double()
        scale = float(x.abs().max()) or 1.0
        if kind == "relu":
            differ = ours.bool() != theirs.bool()
            gaps = x[differ].abs()
        else:
            differ = ours != theirs
            flat = x.flatten(2)
            gaps = (flat.gather(2, ours.flatten(2)) - flat.gather(2, theirs.flatten(2))
                    ).abs().view(ours.shape)[differ]
        if gaps.numel() and float(gaps.max()) > tie * scale:
            wrong.append((call, kind, int(differ.sum()), float(gaps.max()) / scale))
    return wrong


class _Stop(Exception):
    pass


def oracle_project(model, x, module_path, features, mode="max", call=0, method="deconvnet",
                   decisions=None):
    """Projections [N, K, 3, H, W] of ``features`` of the output of ``module_path``, by
    ``method`` (deconvnet, guided or gradient): one recorded forward pass, one backward pass
    per feature. ``decisions`` (:func:`record_decisions` of the same model, in float32, say):
    every ReLU masks and every max-pool switches as those say, instead of as ``x`` decides
    (the arithmetic is then float64's, the discrete choices the given computation's)."""
    module = model.get_submodule(module_path) if module_path else model
    captured = []

    def hook(mod, inputs, output):
        captured.append(output)
        if len(captured) > call:
            raise _Stop

    xx = x.detach().clone().requires_grad_(True)
    handle = module.register_forward_hook(hook)
    try:
        with DeconvRules(method, decisions), torch.enable_grad():
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


