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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "cds_service"):
    return structlog.get_logger(name)
