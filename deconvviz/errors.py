"""The exceptions deconvviz raises.

Everything a user can get wrong (a model name, a layer, a feature index, a file) raises a
subclass of ``ValueError`` with a message that names the valid choices. The CLI turns these
into a one-line ``error:`` with exit code 2.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "DeconvvizError",
    "UnknownModelError",
    "UnknownLayerError",
    "WeightsError",
    "ImageError",
    "UnsupportedOpError",
    "ArgumentError",
    "UnknownPrecisionError",
    "OutputError",
    "Interrupted",
    "first_line",
]


class DeconvvizError(ValueError):
    """Base class of every error deconvviz raises about its input."""


class UnknownModelError(DeconvvizError):
    """A model name that is not in the zoo."""


class UnknownLayerError(DeconvvizError):
    """A layer name that is neither an alias nor a module path of the model."""


class WeightsError(DeconvvizError):
    """Weights that cannot be found, downloaded or loaded into the model."""


class ImageError(DeconvvizError):
    """An image file that is missing, empty, truncated or not an image."""


class UnsupportedOpError(DeconvvizError):
    """An operation on the path from a layer down to the input that has no deconvnet rule."""


class ArgumentError(DeconvvizError):
    """Any other bad argument: a feature out of range, a seed of the wrong shape, ..."""


class UnknownPrecisionError(ArgumentError):
    """A ``precision=`` (``--precision``) that is not one deconvviz offers."""


class OutputError(DeconvvizError):
    """An output path that cannot be written: wrong extension, missing or read-only folder."""


class Interrupted(RuntimeError):
    """A long run (a scan, a training run) stopped by Ctrl-C after saving where it was; the
    message says how to continue (``--resume``)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A hint naming the closest of ``choices`` to ``name`` ('' when none is close)."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
