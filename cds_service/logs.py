"""Structured JSON logs (structlog) with the hookInstance bound per request.

What is never logged: the Authorization header or JWT, ``fhirAuthorization.access_token``, patient ids
or any other patient identifier. Log events name the service, hookInstance, timings and counts only.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson


def _import_structlog():
    """structlog, imported without ``rich``.

    structlog loads rich, when it is installed, for its own exception rendering (rich tracebacks, the repr of
    local variables). Nothing here uses either: :func:`exception_without_data` replaces ``exc_info`` before any
    renderer sees it, and the console renderer is given ``plain_traceback``. Hidden from structlog's import,
    rich (with pygments and attrs) stays unloaded: about a tenth of a second less CPU at every start. A
    process that loaded rich already keeps it as it is.
    """
    hidden = "rich" not in sys.modules
    if hidden:
        sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        return importlib.import_module("structlog")
    finally:
        if hidden:
            del sys.modules["rich"]


structlog = _import_structlog()

MAX_FRAMES = 8
# A log field longer than this is cut, with its length and a short digest so equal values stay
# recognisable: a caller-chosen string (a 4.5 MB hookInstance) never reaches the log whole.
MAX_FIELD_CHARS = 200


def cap_length(value: str, limit: int = MAX_FIELD_CHARS) -> str:
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{value[:limit]}...[{len(value)} chars, sha256 {digest}]"


def _cap_fields(_logger, _method, event: dict) -> dict:
    for key, value in event.items():
        if type(value) is str and len(value) > MAX_FIELD_CHARS:
            event[key] = cap_length(value)
    return event


class RateLimited:
    """At most one line per ``every`` seconds for an event that can repeat on every request.

    A dependency that is down (JWKS, Redis, the database) fails every request; one line per request
    would flood the log (1,204 lines in 11 s). The first occurrence is logged at once; later ones in the
    same window are counted and reported as ``suppressed`` on the next line that is written.
    """

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, emit: Callable[..., object], event: str, **fields) -> bool:
        """Call ``emit(event, **fields)`` unless ``event`` was logged less than ``every`` s ago."""
        now = self._clock()
        if now < self._next.get(event, 0.0):
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return False
        self._next[event] = now + self.every
        suppressed = self._suppressed.pop(event, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        emit(event, **fields)
        return True


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
        _cap_fields,
        exception_without_data,  # after the cap: its text is ours and bounded (MAX_FRAMES)
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    global _hot
    chain = [*processors, renderer]
    threshold = logging.getLevelName(level.upper())
    stderr = _CurrentStderr()
    # WriteLogger writes a line and its newline in one call: PrintLogger's print() writes them apart, two system
    # calls per line when stderr is unbuffered (PYTHONUNBUFFERED, as the Docker image sets). Same bytes out.
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stderr),
        cache_logger_on_first_use=False,
    )
    # The same printer (and so the same write lock) as the loggers' own.
    _hot = (chain, structlog.WriteLogger(file=stderr)) if json and threshold <= logging.INFO else None


# (the processor chain configure() installed, its printer) when its lines are JSON and INFO is on.
_hot: tuple[list, structlog.WriteLogger] | None = None


def hot_info(logger, event: str, **fields) -> None:
    """``logger.info(event, **fields)`` for a line written on every hook call.

    While the configuration is the one :func:`configure` installs with JSON lines, the line is built here
    with the same steps in the same order (the call's fields, ``event``, the bound context, ``level``, the
    UTC ``timestamp``, long values cut) and written by the same printer, without the processor chain;
    otherwise (console lines, INFO filtered out, a configuration a test installed) ``logger`` writes it.
    """
    hot = _hot
    if hot is None or structlog.get_config()["processors"] is not hot[0]:
        logger.info(event, **fields)
        return
    fields["event"] = event
    for key, value in structlog.contextvars.get_contextvars().items():
        fields.setdefault(key, value)
    fields["level"] = "info"
    fields["timestamp"] = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
    hot[1].msg(_orjson_dumps(_cap_fields(None, "info", fields)))


def get_logger(name: str = "cds_service"):
    return structlog.get_logger(name)


def bind(**values) -> None:
    """Add fields to every log line of the current request (the middleware resets them per request)."""
    structlog.contextvars.bind_contextvars(**values)
