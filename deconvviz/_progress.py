"""``progress=``, one shape everywhere (docs/api.md): ``True`` for a tqdm bar on stderr,
``False`` (or ``None``) for silence, or a callable ``progress(done, total, label)`` called
after each item: ``done`` items so far of ``total`` (``None`` when unknown), ``label`` what was
just done (a path written, a method's maps, a checkpoint)."""
from __future__ import annotations

import io
from typing import Callable, Optional, Union

__all__ = ["ProgressArg", "progress_bar", "check_progress"]

ProgressArg = Union[None, bool, Callable[[int, Optional[int], str], None]]


def check_progress(progress: ProgressArg) -> ProgressArg:
    from .errors import ArgumentError

    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise ArgumentError(f"progress must be True, False or a callable progress(done, total, "
                        f"label); got {type(progress).__name__}")


def _takes_three(fn: Callable) -> bool:
    import inspect

    try:
        inspect.signature(fn).bind(0, 0, "")
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): take it as the new shape
        return True
    return True


def progress_bar(progress: ProgressArg, *, total: Optional[int] = None,
                 desc: Optional[str] = None, unit: str = "it",
                 legacy: Optional[Callable[[Callable], Callable]] = None,
                 where: str = "", **options):
    """A tqdm bar for ``progress``: shown for ``True``, silent for ``False``/``None``, and for a
    callable a silent bar whose :meth:`update` (``update(n=1, label="")``) reports to it.

    ``legacy`` turns a callable of the function's old shape (one that cannot take ``(done,
    total, label)``) into the new one, with a deprecation warning naming ``where``."""
    from tqdm import tqdm

    check_progress(progress)
    if callable(progress) and not isinstance(progress, bool) and legacy is not None \
            and not _takes_three(progress):
        from ._signatures import deprecated

        deprecated(where or "progress", "a progress callable of the old shape",
                   "progress(done, total, label)")
        progress = legacy(progress)

    class Bar(tqdm):
        def __init__(self, report, **kwargs):
            self._report = report
            super().__init__(**kwargs)

        def update(self, n: int = 1, label: str = ""):  # noqa: D401 - tqdm's own name
            shown = super().update(n)
            if self._report is not None:
                self._report(int(self.n), None if self.total is None else int(self.total),
                             label)
            return shown

    if callable(progress) and not isinstance(progress, bool):
        return Bar(progress, total=total, desc=desc, unit=unit, file=io.StringIO(),
                   mininterval=0, **options)
    return Bar(None, total=total, desc=desc, unit=unit, disable=not progress,
               dynamic_ncols=True, **options)
