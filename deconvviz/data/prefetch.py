"""Reading ahead: the next batch prepared before the current one is handed on."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["one_ahead"]

T = TypeVar("T")
R = TypeVar("R")


def one_ahead(batches: Iterable[T], prepare: Callable[[T], R]) -> Iterator[R]:
    """``prepare(batch)`` for each batch, the next one prepared before the current one is
    handed on, so that reading and decoding (a DataLoader's next batch, an asynchronous copy
    or GPU decode) overlap the model's work on the current one."""
    iterator = iter(batches)
    try:
        ready = prepare(next(iterator))
    except StopIteration:
        return
    for batch in iterator:
        following = prepare(batch)
        yield ready
        ready = following
    yield ready
