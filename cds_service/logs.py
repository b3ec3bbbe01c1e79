"""Structured JSON logs (structlog) with the hookInstance bound per request.

What is never logged: the Authorization header or JWT, ``fhirAuthorization.access_token``, patient ids
or any other patient identifier. Log events name the service, hookInstance, timings and counts only.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import orjson
import structlog

MAX_FRAMES = 8


def _orjson_dumps(obj, default=None) -> str:  # structlog wants str
    return orjson.dumps(obj, default=default).decode()


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time, not at configure time (pytest swaps and closes it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def exception_without_data(_logger, _method, event_dict):
    """A failure as its type and where it happened (``facts.py:120 in build_facts``, innermost first).

    Never the exception's message or local variables: either can carry patient data (a name in a
    ValueError, a birth date in a local). Replaces ``exc_info`` before any renderer can format it.
    """
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    etype, _exc, tb = exc_info
    if etype is None:
        return event_dict
    frames = traceback.extract_tb(tb)[-MAX_FRAMES:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    event_dict["exception"] = f"{etype.__name__} at {where}" if where else etype.__name__
    return event_dict


def configure(level: str = "INFO", json: bool = True) -> None:
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        exception_without_data,
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
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
