"""The data-source interface: answer prefetch queries for one patient."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class SourceError(Exception):
    """The source could not answer: the message is safe to show (no tokens, no patient ids)."""


class DataSource(ABC):
    """Answers prefetch queries, given as ``key -> relative FHIR query`` (tokens already filled).

    The result maps each key it could answer to a FHIR resource, a Bundle, or ``None`` (the query ran
    and found nothing). A key it could not answer is left out, never guessed.
    """

    @abstractmethod
    async def fetch(self, queries: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError
