"""Text as every supported database accepts it.

PostgreSQL refuses NUL in text (``text fields cannot contain NUL``) and no driver can encode a lone UTF-16
surrogate (JSON ``"\\ud800"`` decodes to one). Either would fail the whole transaction it is in, so both
are replaced by U+FFFD before a value reaches the database, whatever its backend.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def db_text(value: str | None, limit: int) -> str | None:
    """``value`` storable and at most ``limit`` characters (None stays None)."""
    if value is None:
        return None
    if len(value) > limit:
        value = value[:limit]
    # Printable text holds neither NUL nor a surrogate; the C check is several times cheaper than the search
    # and answers for nearly every value (ids, names, digests), which the audit writer cleans on the event loop.
    if value.isprintable():
        return value
    if _UNSTORABLE.search(value) is not None:
        value = _UNSTORABLE.sub(REPLACEMENT, value)
    return value
