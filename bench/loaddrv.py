"""A small HTTP/1.1 keep-alive load driver for requests whose headers change on every call.

h2load and wrk send the same headers on every request. A CDS Hooks client JWT carries a unique ``jti``
that the service's replay cache remembers, so a repeated token is (rightly) refused. This driver sends
one pre-minted token per request: the tokens are signed *before* the timed run, so signing costs the
driver nothing while it measures. It speaks just enough HTTP/1.1 (Content-Length bodies, keep-alive)
over asyncio streams (uvloop when present) to be cheap; run it on another core than the server.

Latency is measured per request from the first byte written to the last byte of the response read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.report import RunResult, percentile


@dataclass
class DriverStats:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    sample_body: bytes = b""
    sample_status: int = 0


def _request_bytes(host: str, path: str, body: bytes, token: str | None) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Accept: application/json"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            raise RuntimeError("chunked responses are not supported by this driver")
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _connection(url: str, body: bytes, tokens: list[str | None], stats: DriverStats) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, parts.port or 80)
    path = parts.path or "/"
    try:
        while tokens:
            token = tokens.pop()
            payload = _request_bytes(f"{host}:{parts.port}", path, body, token)
            started = time.perf_counter()
            writer.write(payload)
            try:
                status, answer = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                stats.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, parts.port or 80)
                continue
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if not stats.sample_body or status >= 300:
                stats.sample_body, stats.sample_status = answer, status
    finally:
        writer.close()


async def drive(url: str, body: bytes, tokens: Sequence[str | None], concurrency: int) -> tuple[RunResult,
                                                                                                 DriverStats]:
    """Send one request per token (``None`` = no Authorization header) over ``concurrency`` connections."""
    queue = list(reversed(tokens))
    stats = DriverStats()
    started = time.perf_counter()
    await asyncio.gather(*(_connection(url, body, queue, stats) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    non_2xx = sum(n for code, n in stats.statuses.items() if not 200 <= code < 300)
    done = len(stats.latencies_ms)
    result = RunResult(rps=done / elapsed if elapsed else 0.0, p50_ms=percentile(stats.latencies_ms, 50),
                       p99_ms=percentile(stats.latencies_ms, 99), requests=done, errors=stats.errors + non_2xx,
                       tool="loaddrv", extra={"statuses": dict(stats.statuses)})
    return result, stats


def run(url: str, body: bytes, tokens: Sequence[str | None], concurrency: int) -> tuple[RunResult, DriverStats]:
    try:
        import uvloop

        return uvloop.run(drive(url, body, tokens, concurrency))
    except ImportError:
        return asyncio.run(drive(url, body, tokens, concurrency))
