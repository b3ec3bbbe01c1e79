"""Per FHIR-server origin: a bound on requests in flight and a circuit breaker.

Why both. A FHIR server that stops answering must cost the service nothing after it has been noticed:

* **Bounded concurrency.** At most ``per_origin`` requests to one origin are in flight; the others wait
  for a slot on an asyncio semaphore, whose wait is cut cleanly by the call's deadline. All origins
  together never exceed ``total``, which is the HTTP client's pool size, so the pool itself never has
  requests waiting for a connection. That matters: httpcore (1.0.9, the newest release) can leak a
  connection slot for good when a request is cancelled while it waits in a contended pool, after which
  every request fails with a pool timeout until restart (docs/operations.md, FHIR fallback).
  A request that never waits inside the pool cannot hit that path.
* **Circuit breaker.** When at least ``failure_ratio`` of the requests to an origin in the last
  ``window_seconds`` failed (timeout, connection error, HTTP 5xx), and there were at least ``min_requests`` of
  them, the origin is *open* for ``open_seconds``: its requests fail at once, without touching the network,
  and requests that were waiting for a place give it up. Then one trial request is let through
  (*half-open*); success closes the circuit, failure opens it again for twice as long (up to
  ``max_open_seconds``). A share over a window, not a run of consecutive failures: one call asks for up
  to eight keys at once, so one slow call would be a run of eight failures and cut off a server that
  answers every other call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from cds_service.sources.base import SourceError

Origin = tuple[str, str, int | None]


def origin_of(url: str) -> Origin:
    """(scheme, host, port); raises ValueError for a URL that has none (``http://[::1``, port 99999)."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _guard_key(url: str) -> Origin:
    try:
        return origin_of(url)
    except ValueError:
        return "invalid", "", None  # such a source refuses every request before using its guard


class CircuitOpen(SourceError):
    pass


class OriginGuard:
    def __init__(self, per_origin: int, total: asyncio.Semaphore, *, window_seconds: float, min_requests: int,
                 failure_ratio: float, open_seconds: float, max_open_seconds: float,
                 clock: Callable[[], float]) -> None:
        self._slots = asyncio.Semaphore(per_origin)
        self._total = total
        self._window = window_seconds
        self._min_requests = min_requests
        self._ratio = failure_ratio
        self._base_open = open_seconds
        self._max_open = max_open_seconds
        self._clock = clock
        self._outcomes: deque[list[float]] = deque()  # [second, answered, failed], oldest first
        self.tripped = False
        self.open_until = 0.0
        self._open_for = open_seconds
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if not self.tripped:
            return "closed"
        return "open" if self._clock() < self.open_until or self._trial_in_flight else "half-open"

    def _admit(self) -> bool | None:
        """None: refused; otherwise whether this request is the half-open trial."""
        if not self.tripped:
            return False
        if self._clock() < self.open_until or self._trial_in_flight:
            return None
        self._trial_in_flight = True
        return True

    def _count(self, ok: bool, now: float) -> tuple[int, int]:
        """Record one outcome; the answered and failed requests within the window."""
        second = float(int(now))
        outcomes = self._outcomes
        while outcomes and outcomes[0][0] <= second - self._window:
            outcomes.popleft()
        if not outcomes or outcomes[-1][0] != second:
            outcomes.append([second, 0, 0])
        outcomes[-1][1 if ok else 2] += 1
        return sum(int(o[1]) for o in outcomes), sum(int(o[2]) for o in outcomes)

    def record(self, ok: bool, *, trial: bool = False) -> None:
        """The outcome of a request that went out (``trial``: the half-open trial)."""
        now = self._clock()
        if trial:
            self._trial_in_flight = False
            if ok:  # the origin answers again: forget the failures that opened the circuit
                self.tripped, self._open_for = False, self._base_open
                self._outcomes.clear()
            else:
                self._open_for = min(self._max_open, self._open_for * 2)
                self.open_until = now + self._open_for
            return
        answered, failed = self._count(ok, now)
        if not ok and not self.tripped and answered + failed >= self._min_requests and \
                failed >= self._ratio * (answered + failed):
            self.tripped, self.open_until = True, now + self._open_for

    async def acquire(self) -> bool:
        """Wait for a place for one request (a cancellable wait); :class:`CircuitOpen` at once when open, or
        when the circuit opened while this request waited. Returns whether the request is the trial.

        The caller hands the place to the task that makes the request, which calls :meth:`release` when
        the request has really ended (so requests in flight never exceed the pool size)."""
        trial = self._admit()
        if trial is None:
            raise CircuitOpen("the FHIR server is not answering (recent requests failed); not asked again yet")
        try:
            await self._slots.acquire()
            try:
                await self._total.acquire()
            except BaseException:
                self._slots.release()
                raise
        except BaseException:
            if trial:
                self._trial_in_flight = False
            raise
        if self.tripped and not trial:  # opened while this request waited for its place
            self.release()
            raise CircuitOpen("the FHIR server is not answering (recent requests failed); not asked again yet")
        return trial

    def release(self) -> None:
        self._total.release()
        self._slots.release()


class OriginGuards:
    """The guards of every FHIR origin this process has called (one per scheme, host and port)."""

    def __init__(self, *, per_origin: int = 16, total: int = 100, window_seconds: float = 10.0,
                 min_requests: int = 10, failure_ratio: float = 0.5, open_seconds: float = 5.0,
                 max_open_seconds: float = 60.0, max_origins: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_origin = per_origin
        self.total = total
        self._total = asyncio.Semaphore(total)
        self._options = dict(window_seconds=window_seconds, min_requests=min_requests, failure_ratio=failure_ratio,
                             open_seconds=open_seconds, max_open_seconds=max_open_seconds, clock=clock)
        self._guards: dict[Origin, OriginGuard] = {}
        self._max_origins = max_origins

    def for_url(self, url: str) -> OriginGuard:
        key = _guard_key(url)
        guard = self._guards.get(key)
        if guard is None:
            if len(self._guards) >= self._max_origins:  # callers choose fhirServer: keep the map bounded
                idle = [k for k, g in self._guards.items() if g.state == "closed"]
                for k in idle[: max(1, len(idle) // 2)]:
                    del self._guards[k]
            guard = self._guards[key] = OriginGuard(self.per_origin, self._total, **self._options)
        return guard
