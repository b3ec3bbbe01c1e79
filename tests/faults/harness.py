"""The fault suite's parts: the service as a real process, private database and cache servers, a FHIR server
that never answers, and a bounded load driver. Everything binds a free loopback port; nothing here touches
the shared PostgreSQL or Redis.

``CDS_FAULTS_SCALE`` (default 1) multiplies load durations: ``CDS_FAULTS_SCALE=10 pytest tests/faults`` is
the longer run whose figures are in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("CDS_FAULTS_SCALE", "1"))
SELECT = "/cds-services/neurosarcoidosis-order-select"
REQUEST = json.loads((REPO / "fixtures" / "requests" / "ivig-order-select.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}") from None
            time.sleep(0.1)


class Service:
    """``uvicorn cds_service.app:create_app`` in its own process, as an operator runs it."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CDS_DATA_DIR": str(data_dir),
                    "CDS_LOG_LEVEL": "WARNING", **env}
        self.log = data_dir.parent / f"service-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "cds_service.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--timeout-graceful-shutdown", "15"],
            env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=40)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hook_body(**over) -> dict:
    body = copy.deepcopy(REQUEST)
    body["hookInstance"] = str(uuid.uuid4())
    body.update(over)
    return body


def with_orders(n: int) -> dict:
    """The IVIG fixture request with ``n`` distinct IVIG draft orders (each one's dose text differs, so no cache
    of the rules helps)."""
    body = copy.deepcopy(REQUEST)
    order = body["context"]["draftOrders"]["entry"][0]
    entries = []
    for i in range(n):
        entry = copy.deepcopy(order)
        entry["resource"]["id"] = f"ivig-order-{i}"
        entry["resource"]["dosageInstruction"][0]["text"] = f"Immune globulin (human) IV, order {i}"
        entries.append(entry)
    body["context"]["draftOrders"]["entry"] = entries
    body["context"]["selections"] = [f"MedicationRequest/ivig-order-{i}" for i in range(n)]
    body["hookInstance"] = str(uuid.uuid4())
    return body


def feedback_body(card: str, comment: str = "ok") -> dict:
    return {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-25T01:37:52Z",
                          "overrideReason": {"reason": {"code": "patient-declined", "display": "Declined"},
                                             "userComment": comment}}]}


@dataclass
class Tally:
    """What the load saw: statuses, latencies, cards returned, feedback acknowledged."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"hook": [], "feedback": []})
    cards: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def p(self, kind: str, q: float) -> float:
        values = sorted(self.latencies[kind])
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def mixed_load(base: str, seconds: float, concurrency: int, tally: Tally, *, feedback_share: float = 0.25,
                     hostile: bool = False, stop: asyncio.Event | None = None) -> None:
    """``concurrency`` workers for ``seconds``: hook calls, and feedback on cards they returned."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        async def worker(n: int) -> None:
            i = 0
            while loop.time() < end and not (stop and stop.is_set()):
                i += 1
                fb = tally.cards and (i * 7 + n) % 100 < feedback_share * 100
                started = loop.time()
                try:
                    if fb:
                        card = next(iter(tally.cards)) if not hostile else "card-\x00-" + str(i)
                        card = sorted(tally.cards)[(i * 31 + n) % len(tally.cards)] if not hostile else card
                        comment = "**bold** [x](https://evil.example) \x00" if hostile else "ok"
                        resp = await client.post(f"{SELECT}/feedback", json=feedback_body(card, comment))
                        kind = "feedback"
                        if resp.status_code == 200:
                            tally.acknowledged.add(card)
                    else:
                        extra = {"hookInstance": f"poison-\x00-{n}-{i}"} if hostile else {}
                        resp = await client.post(SELECT, json=hook_body(**extra))
                        kind = "hook"
                        if resp.status_code == 200:
                            tally.cards.update(c["uuid"] for c in resp.json()["cards"])
                except httpx.HTTPError as exc:
                    tally.errors.append(type(exc).__name__)
                    continue
                tally.latencies[kind].append(loop.time() - started)
                tally.statuses[resp.status_code] = tally.statuses.get(resp.status_code, 0) + 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


def sqlite_rows(db: Path) -> tuple[set[str], set[str]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        cards = {r[0] for r in conn.execute("SELECT card_uuid FROM cds_card")}
        feedback = {r[0] for r in conn.execute("SELECT card_uuid FROM cds_feedback")}
    return cards, feedback


class HangingServer:
    """A FHIR server that accepts connections and reads requests but never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/fhir"
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _serve(self, reader, writer) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                await asyncio.sleep(3600)
        except Exception:  # noqa: BLE001 - the client gave up
            pass

    def __enter__(self) -> HangingServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=512), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, stopped and started at will.

    ``persistent=False`` is Redis as often deployed for caches (no RDB, no AOF): a restart comes back empty.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else \
            ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *durability, "--dir", str(self.directory)], stdout=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None
