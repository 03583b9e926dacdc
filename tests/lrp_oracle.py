"""An independent LRP oracle, written from the rules' formulas, used only by the tests.

LRP is a backward pass in which each op's backward maps the relevance on its output to its
inputs. This oracle runs the model forward under a TorchFunctionMode that replaces each
functional call by an autograd Function whose backward is the op's LRP rule, then reads the
input's "gradient": it is the input relevance. The layers' rules are written out below from
Montavon et al. (2019) with zennit 0.5's stabiliser ``z + e*(sign(z) + [z == 0])``; each
term's ``Wᵀ(g)`` is autograd's gradient of the modified layer. BatchNorm is folded into the
convolution whose output it normalises, found by the call order in a first forward pass (not
from a graph). It shares no code with deconvviz's engine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

PASS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6,
        F.hardtanh, F.silu, F.gelu, F.hardswish, F.leaky_relu, F.mish, F.elu,
        F.local_response_norm, F.dropout}
GATES = {torch.sigmoid, F.sigmoid, torch.Tensor.sigmoid, F.hardsigmoid}
ADDS = {torch.Tensor.__add__, torch.Tensor.__iadd__, torch.add, torch.Tensor.add, torch.Tensor.add_,
        torch.Tensor.__radd__}
MULS = {torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.mul, torch.Tensor.mul}
POOLS = {F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, torch.Tensor.mean}
LINEARISED = {torch.permute, torch.Tensor.permute}


def without_biases(model):
    """``model`` with every bias and BatchNorm's running mean set to zero, in place (the
    biases absorb relevance: without them LRP's rules conserve it exactly). Returns it."""
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
    return model


def stab(z, e):
    return z + e * ((z == 0).to(z) + z.sign())


def _fwd(kind, params, x, w, b):
    if kind == "conv":
        return F.conv2d(x, w, b, *params)
    return F.linear(x, w, b)


def _wt(kind, params, inp, w, g):
    """Wᵀ g: the gradient of the modified layer at a dummy input of inp's shape."""
    with torch.enable_grad():
        leaf = torch.zeros_like(inp, requires_grad=True)
        (grad,) = torch.autograd.grad(_fwd(kind, params, leaf, w, None), leaf, g)
    return grad


def layer_relevance(rule, kind, params, x, w, b, R, eps, stabilizer, gamma, low, high):
    """One layer's rule, from the formulas."""
    P, N = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    b = b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    f = lambda i, ww, bb: _fwd(kind, params, i, ww, bb)  # noqa: E731
    wt = lambda i, ww, g: _wt(kind, params, i, ww, g)  # noqa: E731
    zero = torch.zeros_like(b)
    if rule == "epsilon":
        return x * wt(x, w, R / stab(f(x, w, b), eps))
    if rule in ("zplus", "alpha1beta0", "alpha2beta1"):
        a, be = (2.0, 1.0) if rule == "alpha2beta1" else (1.0, 0.0)
        zp = f(P(x), P(w), P(b)) + f(N(x), N(w), zero)
        gp = R / stab(zp, stabilizer)
        out = a * (P(x) * wt(x, P(w), gp) + N(x) * wt(x, N(w), gp))
        if be:
            zn = f(P(x), N(w), N(b)) + f(N(x), P(w), zero)
            gn = R / stab(zn, stabilizer)
            out = out - be * (P(x) * wt(x, N(w), gn) + N(x) * wt(x, P(w), gn))
        return out
    if rule == "gamma":
        y = f(x, w, b)
        wp, wn = w + gamma * P(w), w + gamma * N(w)
        gp = R * (y > 0) / stab(f(P(x), wp, b + gamma * P(b)) + f(N(x), wn, zero), stabilizer)
        gn = R * (y < 0) / stab(f(P(x), wn, b + gamma * N(b)) + f(N(x), wp, zero), stabilizer)
        return (P(x) * wt(x, wp, gp) + N(x) * wt(x, wn, gp) + P(x) * wt(x, wn, gn)
                + N(x) * wt(x, wp, gn))
    if rule == "flat":
        ones = torch.ones_like(w)
        return wt(x, ones, R / stab(f(torch.ones_like(x), ones, zero), stabilizer))
    if rule == "wsquare":
        return wt(x, w * w, R / stab(f(torch.ones_like(x), w * w, b * b), stabilizer))
    if rule == "zbox":
        lo, hi = low.expand_as(x), high.expand_as(x)
        g = R / stab(f(x, w, b) - f(lo, P(w), P(b)) - f(hi, N(w), N(b)), stabilizer)
        return x * wt(x, w, g) - lo * wt(x, P(w), g) - hi * wt(x, N(w), g)
    raise ValueError(rule)


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out, spec):
        ctx.spec, ctx.x = spec, x.detach()
        return out.detach().clone()

    @staticmethod
    def backward(ctx, R):
        rule, kind, params, w, b, consts = ctx.spec
        return layer_relevance(rule, kind, params, ctx.x, w, b, R, *consts), None, None


class _Pass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out):
        return out.detach().clone()

    @staticmethod
    def backward(ctx, R):
        return R, None


class _ZRule(torch.autograd.Function):
    """x * Jᵀ(R / y) of a one-input op f (pools, means; linearised ops)."""

    @staticmethod
    def forward(ctx, x, fn, e):
        ctx.x, ctx.fn, ctx.e = x.detach(), fn, e
        return fn(x.detach())

    @staticmethod
    def backward(ctx, R):
        with torch.enable_grad():
            leaf = ctx.x.clone().requires_grad_(True)
            y = ctx.fn(leaf)
            (g,) = torch.autograd.grad(y, leaf, R / stab(y.detach(), ctx.e))
        return ctx.x * g, None, None


class _Sum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, e):
        ctx.a, ctx.b, ctx.e = a.detach(), b.detach(), e
        return a.detach() + b.detach()

    @staticmethod
    def backward(ctx, R):
        g = R / stab(ctx.a + ctx.b, ctx.e)
        return ctx.a * g, ctx.b * g, None


class _Gated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate):
        return x.detach() * gate.detach()

    @staticmethod
    def backward(ctx, R):
        return R, None


def _layer_norm_held(x, shape, weight=None, bias=None, eps=1e-5):
    """F.layer_norm as the affine map it is with the standard deviation of ``x`` fixed."""
    dims = tuple(range(-len(shape), 0))
    std = torch.sqrt(x.detach().var(dims, unbiased=False, keepdim=True) + eps)

    def held(t):
        y = (t - t.mean(dims, keepdim=True)) / std
        y = y * weight if weight is not None else y
        return y + bias if bias is not None else y
    return held


class _Oracle(TorchFunctionMode):
    def __init__(self, x, composite, folds, scan=False):
        super().__init__()
        self.x, self.c, self.folds, self.scan = x, composite, folds, scan
        self.layer_calls, self.conv_outputs, self.gates, self.folded_outputs = 0, [], [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = self.c
        if func in (F.conv2d, F.linear):
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            params = tuple(args[3:]) if func is F.conv2d else ()
            index = self.layer_calls
            self.layer_calls += 1
            out = func(*args, **kwargs)
            if self.scan:
                self.conv_outputs.append((index, out))
                return out
            kind = "conv" if func is F.conv2d else "linear"
            if index in self.folds:  # the BatchNorm after it rides on its weights and bias
                mean, var, gw, gb, e = self.folds[index]
                a = gw / torch.sqrt(var + e)
                w = w * a.reshape(-1, *([1] * (w.dim() - 1)))
                b = ((b if b is not None else 0) - mean) * a + gb
            first = x is self.x
            rule = (c["first"] if first and c["first"] else c[kind])
            spec = (rule, kind, params, w.detach(), None if b is None else b.detach(),
                    (c["epsilon"], c["stabilizer"], c["gamma"], c.get("low"), c.get("high")))
            out = _Layer.apply(x, out, spec)
            if index in self.folds:
                self.folded_outputs.append(out)
            return out
        if func is F.batch_norm:
            names = ["input", "running_mean", "running_var", "weight", "bias", "training",
                     "momentum", "eps"]
            bound = dict(zip(names, args), **kwargs)
            args = tuple(bound.get(k, d) for k, d in zip(
                names, [None, None, None, None, None, False, 0.1, 1e-5]))
            kwargs = {}
            x = args[0]
            if self.scan:
                for index, out in self.conv_outputs:
                    if out is x:
                        self.folds[index] = (args[1], args[2], args[3], args[4], args[7])
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            if any(x is o for o in self.folded_outputs):
                return _Pass.apply(x, out)
            # a BatchNorm of its own: an affine layer under the epsilon rule
            a = args[3] / torch.sqrt(args[2] + args[7])
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return _ZRule.apply(x, lambda t: t * a.reshape(shape) + (args[4] - args[1] * a
                                                                     ).reshape(shape),
                                c["epsilon"])
        if self.scan:
            return func(*args, **kwargs)
        if func in PASS:  # on a copy: an in-place ReLU must not change a saved input
            return _Pass.apply(args[0], func(args[0].detach().clone(), *args[1:], **kwargs))
        if func in GATES:
            out = func(*args, **kwargs)
            self.gates.append(out)
            return out
        if func in POOLS:
            rest = args[1:]
            return _ZRule.apply(args[0], lambda t: func(t, *rest, **kwargs), c["stabilizer"])
        if func is F.layer_norm:  # AttnLRP: the epsilon rule with the std held constant
            return _ZRule.apply(args[0], _layer_norm_held(args[0], *args[1:], **kwargs),
                                c["epsilon"])
        if func in LINEARISED:
            rest = args[1:]
            return _ZRule.apply(args[0], lambda t: func(t, *rest, **kwargs), c["stabilizer"])
        if func in ADDS and all(isinstance(a, torch.Tensor) for a in args[:2]) and not kwargs:
            return _Sum.apply(args[0], args[1], c["stabilizer"])
        if func in MULS and all(isinstance(a, torch.Tensor) for a in args[:2]):
            a, b = args[:2]
            for gate, other in ((a, b), (b, a)):
                if any(gate is g for g in self.gates) or isinstance(gate, nn.Parameter):
                    return _Gated.apply(other, gate)  # a gate or a layer scale: constants
        return func(*args, **kwargs)


SEEN = []


class _Mask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, channel):
        ctx.channel = channel
        return x.detach().clone()

    @staticmethod
    def backward(ctx, R):
        SEEN.append(R.detach().clone())  # the relevance arriving at the layer
        if ctx.channel is None:
            return R, None
        keep = torch.zeros_like(R)
        keep[:, ctx.channel] = R[:, ctx.channel]
        return keep, None


def oracle_lrp(model, x, composite, target=None, mask=None):
    """The input relevance ``[N, 3, H, W]`` of the class ``target`` (default: top-1),
    seeded with its logit. ``composite``: dict with first, conv, linear, epsilon,
    stabilizer, gamma (and low, high for zbox, shaped [1, C, 1, 1]). ``mask``: ``(module,
    channel)``: the relevance on the module's output is masked to that channel (CRP's
    masked-model definition of a concept's heatmap; channel ``None``: not masked); the
    relevance arriving there is appended to ``SEEN``."""
    folds = {}
    with torch.no_grad(), _Oracle(x, composite, folds, scan=True):
        model(x)
    leaf = x.detach().clone().requires_grad_(True)
    handle = None
    if mask is not None:
        handle = mask[0].register_forward_hook(lambda m, i, o: _Mask.apply(o, mask[1]))
    try:
        with torch.enable_grad(), _Oracle(leaf, composite, folds):
            out = model(leaf)
    finally:
        if handle is not None:
            handle.remove()
    rows = torch.arange(x.shape[0])
    cls = out.argmax(1) if target is None else torch.as_tensor(target).expand(x.shape[0])
    seed = torch.zeros_like(out)
    seed[rows, cls] = out.detach()[rows, cls]
    (rel,) = torch.autograd.grad(out, leaf, seed)
    return rel
