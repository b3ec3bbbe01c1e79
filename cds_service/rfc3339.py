"""RFC 3339 date-times (section 5.6), as CDS Hooks asks for ``outcomeTimestamp``.

Exactly ``YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)``: the offset is required, so every value names one
instant. ``20261125`` or ``2026-11-25 01:37`` are refused. An instant must also be representable in UTC
(``0001-01-01T00:00:00+14:00`` is a year-0 instant, outside what any supported database stores): it is
refused too, with the same message, instead of overflowing later.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII)
FORMAT_HINT = "an RFC 3339 date-time with an offset, e.g. 2026-11-25T01:37:52Z"


def parse_instant(value: str) -> datetime:
    """The instant ``value`` names, as an aware UTC datetime; ValueError (safe to show) otherwise."""
    match = _DATE_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be {FORMAT_HINT}")
    frac = match.group(7)
    text = value[:match.start(7)] if frac else value[:match.start(8)]
    if frac:  # Python keeps microseconds: more digits are cut, never rounded into the next second
        text += frac[:7]
    offset = match.group(8)
    text += "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(text.replace("t", "T"))
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"must be {FORMAT_HINT} (a real date, within years 1-9999 in UTC)") from None
