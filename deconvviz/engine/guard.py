"""The guards every function that runs a model owes its user, in one place.

:func:`runs_model` wraps each public function and method that runs a model (every analysis,
the projector's methods, the explorer): before anything else it

- refuses a model in training mode, with one message, *before* any forward pass (BatchNorm
  would update its running statistics and use the batch's, dropout would drop units: both
  change the model and the answer);
- resolves ``device=`` (``None``: where the model is; another device: a copy of the model
  there, the user's model left where it is) and ``precision=`` (:mod:`.precision`);

and after it, on every path, errors and Ctrl-C included, gives the model back as it found it:
no hook added during the call survives, and every module's mode and every parameter's
``requires_grad`` are restored.
"""
from __future__ import annotations

import copy
import functools
import inspect
from contextlib import contextmanager
from typing import Callable, Iterator, List, Tuple, TypeVar, Union

import torch
from torch import nn

from ..data.devices import model_device, resolve_device
from ..errors import ArgumentError
from .precision import computing

__all__ = ["TrainingModeError", "check_eval", "runs_model", "unchanged_after", "device_for",
           "training_modules"]

F = TypeVar("F", bound=Callable)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_state_dict_hooks", "_load_state_dict_pre_hooks")


class TrainingModeError(ArgumentError):
    """A model in training mode given to a function that runs it."""


def _moving_kinds() -> Tuple[type, ...]:
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd
    from torch.nn.modules.instancenorm import _InstanceNorm

    kinds: List[type] = [_BatchNorm, _DropoutNd, _InstanceNorm, nn.MultiheadAttention]
    try:
        from torchvision.ops import StochasticDepth
        kinds.append(StochasticDepth)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return tuple(kinds)


def training_modules(model: nn.Module) -> List[str]:
    """The modules of ``model`` in training mode whose output depends on it (BatchNorm,
    instance norm with running statistics, dropout, stochastic depth, attention dropout)."""
    kinds = _moving_kinds()
    found = []
    for name, module in model.named_modules():
        if not module.training or not isinstance(module, kinds):
            continue
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and \
                not module.track_running_stats:
            continue
        found.append(f"{type(module).__name__} at {name or 'the model itself'!r}")
    return found


def check_eval(model: nn.Module) -> None:
    """Refuse a model in training mode (:class:`TrainingModeError`), naming its first module
    that behaves differently there; nothing has run yet."""
    found = training_modules(model)
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise TrainingModeError(
            f"the model is in training mode ({found[0]}{more}): BatchNorm would update its "
            f"running statistics and dropout drop units, changing your model and the answer; "
            f"call model.eval() first")


def device_for(model: nn.Module, device: Union[None, str, torch.device]) -> torch.device:
    """The device a call computes on: ``device`` (checked), else where ``model`` is."""
    if device is None:
        return model_device(model)
    return resolve_device(str(device)) if not isinstance(device, torch.device) else device


def _snapshot(model: nn.Module):
    modules = list(model.modules())
    hooks = [{name: set(getattr(m, name, {}) or {}) for name in _HOOKS} for m in modules]
    modes = [m.training for m in modules]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    return modules, hooks, modes, grads


def _restore(snapshot) -> None:
    modules, hooks, modes, grads = snapshot
    for module, kept, mode in zip(modules, hooks, modes):
        for name, ids in kept.items():
            registered = getattr(module, name, None)
            if registered:
                for key in [k for k in registered if k not in ids]:
                    del registered[key]
        module.training = mode
    for param, wanted in grads:
        if param.requires_grad != wanted:
            param.requires_grad_(wanted)


@contextmanager
def unchanged_after(*models: nn.Module) -> Iterator[None]:
    """Inside the block anything may hook into ``models`` or switch their modes; on leaving,
    errors included, their hooks, modes and ``requires_grad`` flags are as they were."""
    snapshots = [_snapshot(m) for m in models]
    try:
        yield
    finally:
        for snapshot in snapshots:
            _restore(snapshot)


def _modules_of(value) -> List[nn.Module]:
    """The user's modules inside a ``model`` argument: a module, a projector (its model), or a
    sequence of modules; a zoo name holds none (the function builds it in eval mode)."""
    if isinstance(value, nn.Module):
        return [value]
    inner = getattr(value, "model", None)
    if isinstance(inner, nn.Module):
        return [inner]
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in _modules_of(v)]
    return []


def runs_model(fn: F) -> F:
    """Wrap a public function (or a method of an object holding ``.model``) that runs a
    model: eval mode checked first, ``device=`` applied (the ``model`` argument replaced by a
    copy on that device where it is elsewhere), ``precision=`` in force, and the model given
    back unchanged on every path. The function must take ``precision`` and, unless it is a
    method, ``model`` and ``device``."""
    signature = inspect.signature(fn)
    method = next(iter(signature.parameters)) == "self"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        arguments = bound.arguments
        holder = arguments["self"] if method else arguments.get("model")
        modules = _modules_of(holder)
        for module in modules:
            check_eval(module)
        device = arguments.get("device")
        if device is not None and not method and isinstance(holder, nn.Module):
            target = device_for(holder, device)
            if target != model_device(holder):  # a copy there: the user's model stays put
                arguments["model"] = copy.deepcopy(holder).to(target)
        precision = arguments.get("precision")
        if precision is None and method:
            precision = getattr(holder, "precision", None)
        with computing(precision):
            if not modules:
                return fn(*bound.args, **bound.kwargs)
            with unchanged_after(*modules):
                return fn(*bound.args, **bound.kwargs)

    wrapper.__runs_model__ = True
    return wrapper  # type: ignore[return-value]


def is_guarded(fn: Callable) -> bool:
    """Whether ``fn`` passes through :func:`runs_model` (the API test asks every public
    function that runs a model)."""
    return bool(getattr(fn, "__runs_model__", False))
