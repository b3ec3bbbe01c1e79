"""The data-source seam: what a source says about each prefetch key, and the interface every source keeps.

A hook call's FHIR data comes from a list of sources asked in order (what the EHR sent, then its FHIR
server). For every key a source gives one :class:`KeyResult`:

* ``answered``: a resource or a Bundle;
* ``empty``: the query ran and found nothing (``null`` in prefetch, a read answered 404);
* ``failed``: the source tried and could not answer (an error, a timeout, a refusal), with a reason;
* ``unavailable``: the source does not have it (a key the EHR left out, a source that is not reachable
  from this call) and did not try.

:func:`~cds_service.sources.gather.gather` asks the next source for what is neither answered nor empty,
and a key still unsettled at the end is a 412 when the service requires it, a note on the cards when the
service lists it as optional (``cds_service/data/services.yaml``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SourceError(Exception):
    """The source could not answer: the message is safe to show (no tokens, no patient ids)."""


class Outcome(StrEnum):
    ANSWERED = "answered"
    EMPTY = "empty"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"


# The members as module constants, for the checks a hook call makes on every key: in Python 3.11 reading an
# attribute of an Enum class (``Outcome.ANSWERED``) goes through the metaclass's ``__getattr__`` hook, about
# ten times the cost of reading a global.
ANSWERED, EMPTY_OUTCOME, FAILED, UNAVAILABLE = Outcome.ANSWERED, Outcome.EMPTY, Outcome.FAILED, Outcome.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class KeyResult:
    outcome: Outcome
    value: Any = None  # the resource or Bundle when answered
    reason: str = ""  # why not, when failed or unavailable (safe to show)
    timed_out: bool = False

    @property
    def settled(self) -> bool:
        """Answered or known empty: no later source is asked."""
        outcome = self.outcome
        return outcome is ANSWERED or outcome is EMPTY_OUTCOME

    @classmethod
    def answered(cls, value: Any) -> KeyResult:
        return cls(ANSWERED, value) if value is not None else EMPTY

    @classmethod
    def failed(cls, reason: str, *, timed_out: bool = False) -> KeyResult:
        return cls(FAILED, reason=reason, timed_out=timed_out)

    @classmethod
    def unavailable(cls, reason: str) -> KeyResult:
        return cls(UNAVAILABLE, reason=reason)


EMPTY = KeyResult(EMPTY_OUTCOME)


class DataSource(ABC):
    """Answers prefetch queries (``key -> relative FHIR query``, tokens already filled) for one call."""

    name = "source"
    remote = False  # True for a source that asks a server over the network (counted as fetched, not prefetched)
    requests_made = 0  # network requests this source sent for the call

    async def prepare(self) -> None:  # noqa: B027 - most sources have nothing to get ready
        """Get ready to ask (make a connection pool) before the first :meth:`fetch` of a call; the time it
        takes is not counted against the call's deadline."""

    @abstractmethod
    async def fetch(self, queries: dict[str, str], deadline: float) -> dict[str, KeyResult]:
        """A result for every key of ``queries``, by ``deadline`` (event-loop time); never raises for one key."""

    async def more_pages(self, bundle: dict[str, Any], deadline: float) -> KeyResult:
        """Read the ``next`` pages of a searchset an earlier source answered with its first page only."""
        return KeyResult.unavailable(f"{self.name} cannot read further pages")

    def notes(self) -> list[str]:
        """What the clinician should know about this source's answers (said on the cards)."""
        return []


class UnavailableSource(DataSource):
    """A source the call names but may not use (a FHIR server off the caller's allow-list): every key
    it is asked for is unavailable, with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    async def fetch(self, queries: dict[str, str], deadline: float) -> dict[str, KeyResult]:
        return dict.fromkeys(queries, KeyResult.unavailable(self.reason))

    async def more_pages(self, bundle: dict[str, Any], deadline: float) -> KeyResult:
        return KeyResult.unavailable(self.reason)
