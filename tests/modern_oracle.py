"""An independent oracle for the reverse-pass methods on today's activations and gates.

Each method is the gradient of ``seed . activation`` in which some backward rules change
(docs/methods.md): at every pointwise activation f (LeakyReLU, SiLU, GELU, Hardswish, Mish,
ELU) the deconvnet passes ``relu(signal)`` and guided backprop ``f'(x) * relu(signal)``, with
f' written out by hand below; for both, a sigmoid or hardsigmoid output (a gate) is detached.
The gradient changes nothing. This mode intercepts those calls with a TorchFunctionMode;
``oracle_project`` (tests/oracle.py) adds the ReLU, ReLU6 and LRN rules and reads the layer.
It shares no code with deconvviz's engine.
"""
import contextlib
import math

import torch
import torch.nn.functional as F
from oracle import oracle_project
from torch.overrides import TorchFunctionMode


def _silu(x, kw):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _gelu(x, kw):
    if kw.get("approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (x + 0.044715 * x ** 3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * k * (1 + 3 * 0.044715 * x ** 2)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return cdf + x * torch.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)


def _hardswish(x, kw):
    return torch.where(x < -3, torch.zeros_like(x),
                       torch.where(x > 3, torch.ones_like(x), (2 * x + 3) / 6))


def _leaky_relu(x, kw):
    slope = kw.get("negative_slope", 0.01)
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def _elu(x, kw):
    alpha = kw.get("alpha", 1.0)
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x))


def _mish(x, kw):
    sp = F.softplus(x)
    t = torch.tanh(sp)
    return t + x * torch.sigmoid(x) * (1 - t ** 2)


# function -> (derivative, names of its positional arguments after the input)
DERIVATIVES = {
    F.silu: (_silu, ["inplace"]),
    F.gelu: (_gelu, []),
    F.hardswish: (_hardswish, ["inplace"]),
    F.leaky_relu: (_leaky_relu, ["negative_slope", "inplace"]),
    F.elu: (_elu, ["alpha", "inplace"]),
    F.mish: (_mish, ["inplace"]),
}
GATES = {torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.Tensor.sigmoid}


class _Activation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, func, kwargs, derivative, method):
        ctx.save_for_backward(x)
        ctx.derivative, ctx.kwargs, ctx.method = derivative, kwargs, method
        return func(x, **{k: v for k, v in kwargs.items() if k != "inplace"})

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        up = grad.clamp(min=0)
        if ctx.method == "guided":
            up = up * ctx.derivative(x, ctx.kwargs)
        return up, None, None, None, None


class ModernRules(TorchFunctionMode):
    """Activations' and gates' backward rules of ``method`` (deconvnet or guided)."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in DERIVATIVES:
            derivative, names = DERIVATIVES[func]
            kwargs.update(zip(names, args[1:]))
            return _Activation.apply(args[0], func, kwargs, derivative, self.method)
        if func in GATES:
            return func(*args, **kwargs).detach()
        return func(*args, **kwargs)


def modern_oracle(model, x, layer, features, mode, method):
    """Projections [N, K, 3, H, W] by the convention of ``method``."""
    rules = ModernRules(method) if method != "gradient" else contextlib.nullcontext()
    with rules:
        return oracle_project(model, x, layer, features, mode, method=method)
