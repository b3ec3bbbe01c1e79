"""The engine's one memo helper: bounded memos of pure results, all emptied by :func:`clear_all`.

A memo holds answers that depend only on their key (a date string, a concept's JSON, a number): the
same codes, dates and doses come back in every request. Each memo is bounded in entries (and, when
asked, in bytes of keys): when full it is emptied whole, so hostile input can neither grow memory nor
make eviction costly.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ALL: list[Any] = []  # every memo and memoised function, for clear_all


class Memo(dict):  # type: ignore[type-arg]
    """A dict memo bounded in entries and optionally in the total length of its keys."""

    def __init__(self, max_entries: int = 4096, max_bytes: int | None = None, max_key: int | None = None,
                 register: bool = True) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_key = max_key  # a larger key is not remembered (the answer is recomputed each time)
        self.bytes = 0
        if register:  # a memo owned by an object that empties it itself (the terminology registry) is not
            _ALL.append(self)

    def remember(self, key: Any, value: Any) -> Any:
        size = len(key) if self.max_bytes is not None or self.max_key is not None else 0
        if self.max_key is not None and size > self.max_key:
            return value
        if len(self) >= self.max_entries or (self.max_bytes is not None and self.bytes + size > self.max_bytes):
            self.clear()
        self[key] = value
        self.bytes += size
        return value

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


def memoised(fn: F) -> F:
    """Register a ``functools.lru_cache`` function so that :func:`clear_all` empties it too."""
    _ALL.append(fn)
    return fn


def lru(maxsize: int = 4096, typed: bool = False) -> Callable[[F], F]:
    """``functools.lru_cache`` registered with :func:`clear_all`."""

    def wrap(fn: F) -> F:
        return memoised(functools.lru_cache(maxsize=maxsize, typed=typed)(fn))  # type: ignore[return-value]

    return wrap


def by_short_text(max_len: int, maxsize: int = 4096) -> Callable[[F], F]:
    """Memoise a pure reading of a text by its arguments when the text (the first argument) is a plain
    ``str`` of at most ``max_len`` characters; any other value is read afresh each time, so a hostile
    megabyte of text is never kept. Registered with :func:`clear_all`; ``cache_info`` as lru_cache's."""

    def wrap(fn: F) -> F:
        cached = lru(maxsize)(fn)

        code = fn.__code__
        if code.co_argcount == 1 and not code.co_flags & inspect.CO_VARARGS:
            # a reading of the text alone: no tuple of further arguments built on every call

            @functools.wraps(fn)
            def read(text: Any) -> Any:
                if type(text) is str and len(text) <= max_len:
                    return cached(text)
                return fn(text)
        else:

            @functools.wraps(fn)
            def read(text: Any, *args: Any) -> Any:
                if type(text) is str and len(text) <= max_len:
                    return cached(text, *args)
                return fn(text, *args)

        read.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return read  # type: ignore[return-value]

    return wrap


def clear_all() -> None:
    """Empty every registered memo (cold-cache benchmarks and tests); loaded value sets and card texts stay.
    The terminology registry's own memos are emptied by ``terminology.clear_caches``."""
    for m in _ALL:
        if isinstance(m, Memo):
            m.clear()
        else:
            m.cache_clear()
