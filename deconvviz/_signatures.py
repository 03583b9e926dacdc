"""One vocabulary for the public API (docs/api.md), and the one release of grace old names
get: a renamed argument or one passed by a position that is now keyword-only still works,
with a :class:`DeprecationWarning` naming the new spelling, once per function and name.

:func:`api` wraps a public function or method; it imports nothing heavy, so the command line
can check arguments before torch loads.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Callable, Dict, Mapping, Sequence, Set, Tuple, TypeVar

from .errors import ArgumentError

__all__ = ["api", "deprecated", "reset_warnings", "POSITIONAL"]

F = TypeVar("F", bound=Callable)
POSITIONAL = 2  # parameters that may be given by position (after ``self``): the rest are keyword-only
_warned: Set[Tuple[str, str]] = set()


def deprecated(where: str, old: str, new: str) -> None:
    """Warn, once per process for each ``(where, old)``, that ``old`` is now ``new``."""
    if (where, old) in _warned:
        return
    _warned.add((where, old))
    warnings.warn(f"{where}: {old} is deprecated and will be removed in the next release; "
                  f"use {new}", DeprecationWarning, stacklevel=_outside())


def _outside() -> int:
    """The stack level of the first caller outside deconvviz (the user's line)."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def reset_warnings() -> None:
    """Forget which deprecations were reported (for tests: each warns once per process)."""
    _warned.clear()


def api(*, renamed: Mapping[str, str] = (), legacy: Sequence[str] = (), legacy_from: int = POSITIONAL,
        adapt: Mapping[str, Callable] = ()) -> Callable[[F], F]:
    """Declare a public function's old spellings.

    Args:
        renamed: old keyword -> new keyword (``{"x": "images", "feature": "features"}``).
        legacy: the new names of the parameters that used to be positional from position
            ``legacy_from`` on (after ``self``), in their old order: a call that passes more
            arguments by position than are positional now is mapped onto them, with a warning.
        legacy_from: where ``legacy`` starts (normally after the positional parameters; lower
            where the positional parameters themselves changed).
        adapt: old keyword -> a function turning its value into the new one's (an old
            callback shape into ``progress(done, total, label)``).
    """
    renamed, adapt = dict(renamed), dict(adapt)

    def wrap(fn: F) -> F:
        params = list(inspect.signature(fn).parameters.values())
        positional = [p.name for p in params
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        method = bool(positional) and positional[0] == "self"
        limit = POSITIONAL + method
        if len(positional) > limit:
            raise TypeError(f"{fn.__qualname__}: {positional[limit:]} should be keyword-only")
        where = fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if len(args) > len(positional):
                start = legacy_from + method
                extra, args = args[start:], args[:start]
                if len(extra) > len(legacy):
                    raise ArgumentError(f"{where} takes {len(positional) - method} arguments "
                                        f"by position, the rest by keyword; got "
                                        f"{start + len(extra) - method}")
                for name, value in zip(legacy, extra):
                    if name in kwargs:
                        raise ArgumentError(f"{where}: {name} given twice")
                    deprecated(where, "passing arguments after the first two by position",
                               "keywords (" + ", ".join(f"{n}=" for n in legacy[:len(extra)])
                               + ")")
                    kwargs[name] = value
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ArgumentError(f"{where}: give {new}= only ({old}= is its old "
                                            f"name)")
                    deprecated(where, f"{old}=", f"{new}=")
                    value = kwargs.pop(old)
                    kwargs[new] = adapt[old](value) if old in adapt and value is not None \
                        else value
            return fn(*args, **kwargs)

        wrapper.__deprecated__ = {"renamed": renamed, "legacy": tuple(legacy),
                                  "legacy_from": legacy_from}
        return wrapper  # type: ignore[return-value]

    return wrap


def deprecated_names(module: str, aliases: Dict[str, Tuple[str, Callable[[], object]]]):
    """A module ``__getattr__`` for names kept one release: ``aliases[name]`` is the new
    spelling and a function that returns the object."""

    def getattr_(name: str):
        if name in aliases:
            new, get = aliases[name]
            deprecated(module, name, new)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return getattr_
