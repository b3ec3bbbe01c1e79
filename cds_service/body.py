"""Reading a JSON request body safely: size limit, one parse with orjson, structural bounds."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request

from cds_service.errors import BadRequest, ClientGone, PayloadTooLarge

if TYPE_CHECKING:
    from cds_service.workload import Workload

# A refused body is still read (and thrown away) up to this many bytes and seconds before the 413 is sent:
# a client that writes its whole body before reading the answer would otherwise see its connection reset
# (closing a socket with unread data sends RST) instead of the 413. Beyond these bounds it is cut.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0
# A body that has not arrived in full this long after the request began is refused (408): a client that
# sends a few bytes a minute must not hold a connection and its memory for ever. EHRs send hook bodies of
# at most a few megabytes over a LAN or VPN, in well under a second.
BODY_SECONDS = 30.0


async def _drain(chunks: AsyncIterator[bytes], already: int = 0) -> None:
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + DRAIN_SECONDS
    size = already
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > DRAIN_MAX_BYTES or loop.time() > stop_at:
                return
    except Exception:  # noqa: BLE001 - the client went away: nothing left to drain
        return


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.",
                           headers={"Connection": "close"})


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without keeping the rest in memory, a body still
    incomplete after :data:`BODY_SECONDS` (408), and a client gone before its body arrived (499)."""
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await _read_limited(request, limit)
    except TimeoutError:
        raise BadRequest(f"The request body did not arrive within {BODY_SECONDS:g} s.", status=408, code="timeout",
                         headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone("The client closed the connection before its request body arrived.") from None


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError as exc:
            raise BadRequest("Content-Length header is not a number.") from exc
        if too_large:
            await _drain(request.stream())
            raise _too_large(limit)
    stream = request.stream()
    body = await join_limited(stream, limit)
    if body is None:
        await _drain(stream, limit)
        raise _too_large(limit)
    return body


async def join_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The chunks joined, or None as soon as they pass ``limit`` bytes (the rest is never read).

    Shared by request bodies and FHIR server answers."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


# What is left of a JSON text once every byte that cannot open, close or separate a container is gone.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{},"')
_STRING = re.compile(rb'"[^"]*"')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
_INNERMOST = re.compile(rb"\[,*\]|\{,*\}")  # containers holding no container, with their separators


@functools.lru_cache(maxsize=8)
def _longer_than(max_array: int) -> re.Pattern[bytes]:
    return re.compile(rb"\[,{%d,}\]" % max_array)  # max_array commas: more than max_array items


def check_bounds(raw: bytes, max_depth: int, max_array: int) -> None:
    """Refuse a JSON text nested deeper than ``max_depth`` or holding an array longer than ``max_array``
    (at least 1) items. ``raw`` is a document a JSON parser has already accepted.

    The check reads the bytes, not the parsed tree, and reduces the text to its container skeleton with
    C-speed byte operations. In valid JSON a backslash only occurs inside strings and starts a two-byte
    escape, so dropping every backslash with the byte after it leaves exactly the quotes that delimit strings
    (multi-byte UTF-8 never contains an ASCII byte). Keeping only ``[]{},"`` and removing the strings (first
    adjacent ``""`` pairs, which either remove a whole string or merge two with nothing structural between
    them, then the few strings left) leaves brackets, braces and the commas that separate items: an array of
    n items shows n - 1 commas. Removing every container that holds no container removes one level, so the
    document is within ``max_depth`` iff that many passes empty it. A pass leaves the commas that separate
    the items of the containers it keeps, so while the skeleton has at least ``max_array`` commas each pass
    also looks for an array with ``max_array`` commas; once fewer are left (from the start, for most
    bodies, or after the first pass removes the innermost objects of a large body) no array can be too
    long, and each further pass is a plain ``replace``. tests/test_body.py checks the verdicts against a
    walk of the parsed tree on documents built to confuse it.
    """
    if max_array < 1:
        raise ValueError("max_array must be at least 1")
    s = raw
    if b"\\" in s:
        s = _ESCAPE.sub(b"", s)
    s = s.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in s:
        s = _STRING.sub(b"", s)
    passes = max_depth
    if s.count(b",") >= max_array:
        too_long = _longer_than(max_array)
        while passes and s:
            if too_long.search(s):
                raise BadRequest(f"A JSON array longer than {max_array} items is not accepted.")
            s = _INNERMOST.sub(b"", s)
            passes -= 1
            if s.count(b",") < max_array:  # the commas left are too few for a long array: count levels only
                break
    s = s.translate(_ONE_BRACKET, b",")
    for _ in range(passes):
        if not s:
            break
        s = s.replace(b"[]", b"")
    if s:
        raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted.")


def parse_json(raw: bytes, *, max_depth: int, max_array: int) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("Request body is empty; a JSON object is required.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.msg} (at character {exc.pos}).") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.")
    check_bounds(raw, max_depth, max_array)
    return data


async def read_json(request: Request, *, limit: int, max_depth: int, max_array: int,
                    workload: Workload | None = None) -> dict[str, Any]:
    """The body as a JSON object; a large one is parsed in the ``workload``'s worker thread."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise BadRequest(f"Content-Type must be application/json, not {ctype.split(';')[0]!r}.",
                         status=415, code="not-supported")
    raw = await read_limited(request, limit)
    if workload is not None and workload.large_body(len(raw)):
        return await workload.run(functools.partial(parse_json, raw, max_depth=max_depth, max_array=max_array))
    return parse_json(raw, max_depth=max_depth, max_array=max_array)
