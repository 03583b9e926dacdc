"""How precisely deconvviz computes: full float32 by default, on every device.

PyTorch lets cuDNN's convolutions use TensorFloat-32 (a 10-bit mantissa) on recent NVIDIA GPUs
unless told otherwise, and the user may have allowed it for matrix products too. A projection
computed that way differs from the CPU's by up to tens of percent at deep layers (issue 27),
silently. :func:`computing` sets the backends' flags for deconvviz's own calls and gives the
caller's settings back afterwards, also when an error is raised:

- ``"exact"`` (the default): float32 throughout. TF32 off for cuDNN convolutions and cuBLAS
  matrix products, ``float32_matmul_precision("highest")``, cuDNN restricted to deterministic
  algorithms and its autotuner (``cudnn.benchmark``) off, so that the same call on the same
  GPU gives the same answer.
- ``"tf32"``: TF32 allowed for convolutions and matrix products (PyTorch's own default for
  cuDNN); the caller's determinism settings are left as they are. Faster on GPUs with tensor
  cores, and no longer exact: see ``docs/gpu.md``.

On a CPU both options compute the same float32 arithmetic (the flags only reach CUDA).
Nested calls inherit the precision of the outermost deconvviz call unless they name one: an
analysis run with ``precision="tf32"`` builds projectors that compute in TF32 too.

The flags are read and written through whichever of PyTorch's two interfaces the caller's
settings can be read with (``fp32_precision`` from PyTorch 2.9 on, ``allow_tf32`` before), so
that deconvviz never leaves a mix of the two behind (PyTorch refuses to read such a mix).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Callable, Iterator, Optional, Tuple, TypeVar

import torch

from ..choices import PRECISIONS, check_precision

__all__ = ["computing", "current_precision", "precise", "PRECISIONS",
           "backend_flags", "check_precision", "rel_error", "REL_ERROR_FLOOR"]

_state = threading.local()
F = TypeVar("F", bound=Callable)


def current_precision() -> Optional[str]:
    """The precision of the deconvviz call in progress on this thread (``None`` outside)."""
    return getattr(_state, "precision", None)


def _cudnn_conv():
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    return conv if conv is not None and hasattr(conv, "fp32_precision") else None


def _new_api() -> bool:
    """Whether to use ``fp32_precision``: it exists, and the legacy flags cannot be read
    (the caller set the new interface; reading the old one would raise)."""
    matmul = torch.backends.cuda.matmul
    if _cudnn_conv() is None or not hasattr(matmul, "fp32_precision"):
        return False
    try:
        torch.backends.cuda.matmul.allow_tf32  # noqa: B018  (raises on a mix)
        torch.backends.cudnn.allow_tf32  # noqa: B018
        torch.get_float32_matmul_precision()
    except RuntimeError:
        return True
    return False


def backend_flags() -> Tuple:
    """The flags :func:`computing` sets, as the caller has them (what it restores)."""
    cudnn = torch.backends.cudnn
    if _new_api():
        return ("new", torch.backends.cuda.matmul.fp32_precision,
                _cudnn_conv().fp32_precision, cudnn.deterministic, cudnn.benchmark)
    return ("legacy", torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
            cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark)


def _set(flags: Tuple) -> None:
    cudnn = torch.backends.cudnn
    if flags[0] == "new":
        _, matmul, conv, deterministic, benchmark = flags
        torch.backends.cuda.matmul.fp32_precision = matmul
        _cudnn_conv().fp32_precision = conv
    else:
        _, matmul_precision, matmul, conv, deterministic, benchmark = flags
        torch.set_float32_matmul_precision(matmul_precision)  # sets cuBLAS's flag too
        torch.backends.cuda.matmul.allow_tf32 = matmul
        cudnn.allow_tf32 = conv
    cudnn.deterministic = deterministic
    cudnn.benchmark = benchmark


def _wanted(precision: str, caller: Tuple) -> Tuple:
    exact = precision == "exact"
    deterministic, benchmark = (True, False) if exact else caller[-2:]
    if caller[0] == "new":
        value = "ieee" if exact else "tf32"
        return ("new", value, value, deterministic, benchmark)
    return ("legacy", "highest" if exact else "high", not exact, not exact, deterministic,
            benchmark)


@contextlib.contextmanager
def computing(precision: Optional[str] = None) -> Iterator[str]:
    """Compute inside the block at ``precision`` (``"exact"`` or ``"tf32"``); ``None``: that
    of the deconvviz call in progress, else ``"exact"``. Yields the precision in force.

    The caller's backend flags are restored on leaving, also after an error.

    Raises:
        UnknownPrecisionError: naming the choices.

    Examples:
        >>> with computing("exact"):
        ...     p = Gradient(model).project(x, "conv5_3", features=[0, 1])
    """
    outer = current_precision()
    name = check_precision(precision) if precision is not None else (outer or "exact")
    if name == outer:  # already in force (the flags are only read and set once per call)
        yield name
        return
    caller = backend_flags()
    try:
        _set(_wanted(name, caller))
        _state.precision = name
        yield name
    finally:
        _state.precision = outer
        _set(caller)


def precise(fn: F) -> F:
    """Run ``fn`` (a function with an argument ``precision``) inside :func:`computing` at
    that precision."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        precision = kwargs.get("precision")
        if precision is None and len(args) > 1:  # given by position
            precision = signature.bind_partial(*args, **kwargs).arguments.get("precision")
        with computing(precision):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


REL_ERROR_FLOOR = 1e-30
"""The least denominator of :func:`rel_error`: two all-zero tensors agree (error 0), and any
difference from an all-zero reference is a huge error."""


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """The relative max error of ``a`` against the reference ``b``: ``max |a - b| / max |b|``
    (the denominator at least :data:`REL_ERROR_FLOOR`). The one measure deconvviz's tests,
    benchmarks and documentation state tolerances in."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), REL_ERROR_FLOOR)
