"""Structured JSON logs (structlog) with the hookInstance bound per request.

What is never logged: the Authorization header or JWT, ``fhirAuthorization.access_token``, patient ids
or any other patient identifier. Log events name the service, hookInstance, timings and counts only.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _orjson_dumps(obj, default=None) -> str:  # structlog wants str
    return orjson.dumps(obj, default=default).decode()


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time, not at configure time (pytest swaps and closes it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", json: bool = True) -> None:
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "cds_service"):
    return structlog.get_logger(name)


def bind(**values) -> None:
    """Add fields to every log line of the current request (the middleware resets them per request)."""
    structlog.contextvars.bind_contextvars(**values)
