"""``progress=``, one shape everywhere (docs/api.md): ``True`` for a tqdm bar on stderr,
``False`` (or ``None``) for silence, or a callable ``progress(done, total, label)`` called
after each item: ``done`` items so far of ``total`` (``None`` when unknown), ``label`` what was
just done (a path written, a method's maps, a checkpoint)."""
from __future__ import annotations

import io
import time
from typing import Callable, Optional, Union

__all__ = ["ProgressArg", "progress_bar", "check_progress", "StepEstimate", "duration"]

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


def duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"2 h 10 min"``: a time to wait, rounded as a person says it."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class StepEstimate:
    """A ``progress(done, total, label)`` for a run of ``steps`` equal steps over units (``done``
    and ``total`` count unit-steps) that says, once, how long
    the whole run will take, measured on its second step (the first warms up), when that is
    more than ``over`` seconds: ``say("about 2 h 10 min on this CPU (512 steps × 64 units);
    --steps fewer for a quicker look")``. Each report is passed on to ``then``; a run that
    starts again (``done`` falls) is measured again."""

    def __init__(self, say: Callable[[str], None], *, steps: int, device: str,
                 hint: str, then: Optional[Callable] = None, over: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.say, self.steps, self.clock = say, steps, clock
        self.where = "on this GPU" if str(device).startswith("cuda") else \
            f"on this {str(device).upper()}"
        self.hint, self.then, self.over = hint, then, over
        self._last: Optional[tuple] = None  # (done, time) of the previous report
        self._measured = False

    def __call__(self, done: int, total: Optional[int], label: str = "") -> None:
        now = self.clock()
        if self._last is not None and done < self._last[0]:
            self._last, self._measured = None, False
        if self._last is not None and not self._measured and total and done > self._last[0]:
            self._measured = True
            whole = (now - self._last[1]) / (done - self._last[0]) * total
            if whole > self.over:
                self.say(f"about {duration(whole)} {self.where} ({self.steps} steps × "
                         f"{total // self.steps} units); {self.hint}")
        if self._last is None or not self._measured:
            self._last = (done, now)
        if self.then is not None:
            self.then(done, total, label)
