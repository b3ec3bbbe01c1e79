"""Does the audit trail add latency to hook calls? Same app, audit on vs off, requests interleaved.

    python bench/audit_overhead.py                 # 5 reps x 400 requests per variant, c=1 and c=8
    python bench/audit_overhead.py --reps 3 -n 200 --database-url postgresql://postgres@127.0.0.1/test

In-process (httpx ASGITransport, the app's real lifespan), so the numbers are the service's own time,
without network noise: the EHR-visible difference is the difference shown here. The request is built
from a fixture that yields cards (so every call queues audit rows); if the rules engine answers none,
a stub with three cards is used and the output says so. At the end the rows in the database are
counted, to show the audit side really wrote everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "fixtures" / "fhir" / "02-s1-conduction-block-ivig.json"
SELECT = "/cds-services/neurosarcoidosis-order-select"


def _request() -> dict:
    from cds_service.evaluate import build_request

    return build_request(json.loads(FIXTURE.read_text()), "order-select", "MedicationRequest/ivig-order-1")


async def _stub_engine_if_silent(request: dict) -> bool:
    from cds_service.clinical import engine
    from cds_service.evaluate import evaluate_request_async

    if (await evaluate_request_async(request, "order-select"))["cards"]:
        return False
    from cds_service.models import RULE_ID_EXTENSION, Card, Source

    class Evaluation:
        def __init__(self):
            self.cards = [Card(summary=f"bench {i}", indicator="info", source=Source(label="bench"),
                               extension={RULE_ID_EXTENSION: f"bench.rule-{i}"}) for i in range(3)]

    engine.evaluate = lambda record, hook, **_: Evaluation()
    return True


async def _run(client: httpx.AsyncClient, body: bytes, n: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def worker(count: int) -> None:
        for _ in range(count):
            t = time.perf_counter()
            resp = await client.post(SELECT, content=body, headers=headers)
            latencies.append(time.perf_counter() - t)
            if resp.status_code != 200:
                raise SystemExit(f"hook call failed: {resp.status_code} {resp.text[:300]}")

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return latencies


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(args) -> dict:
    from cds_service.app import create_app
    from cds_service.config import Settings

    request = _request()
    stubbed = await _stub_engine_if_silent(request)
    body = json.dumps(request).encode()
    tmp = Path(tempfile.mkdtemp(prefix="cds-audit-bench-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", database_url=args.database_url,
                        trusted_issuers={}, log_level="WARNING", log_json=True)
    apps = {"audit off": create_app(settings), "audit on": create_app(settings)}
    apps["audit off"].state.audit = None  # the handler skips auditing entirely

    results: dict[tuple[str, int], list[float]] = {}
    async with apps["audit on"].router.lifespan_context(apps["audit on"]), \
            apps["audit off"].router.lifespan_context(apps["audit off"]):
        clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
                   for name, app in apps.items()}
        writer = apps["audit on"].state.audit
        for name in apps:  # warm-up
            await _run(clients[name], body, 50, 1)
        probe = await clients["audit off"].post(SELECT, content=body, headers={"Content-Type": "application/json"})
        cards_per_call = len(probe.json()["cards"])
        await writer.flush()
        store = writer.store
        before = await store.report(None, None)
        rows_before = sum(r.shown for r in before)
        for _rep in range(args.reps):
            for concurrency in (1, 8):
                for name in apps:  # interleaved, so drift hits both variants alike
                    lat = await _run(clients[name], body, args.n, concurrency)
                    results.setdefault((name, concurrency), []).extend(lat)
        await writer.flush()
        rows = sum(r.shown for r in await store.report(None, None)) - rows_before
        audit_metrics = {line.split()[0]: float(line.split()[1])
                         for line in (await clients["audit on"].get("/metrics")).text.splitlines()
                         if line.startswith(("cds_audit_rows_dropped_total", "cds_audit_write_failures_total"))}
        queued_cost = _cost_of_queueing(writer)
        for c in clients.values():
            await c.aclose()

    print(f"fixture: {FIXTURE.name}{' (engine answered no cards: stub with 3 cards)' if stubbed else ''}")
    print(f"store: {settings.sqlalchemy_url.split('://')[0]}; {args.reps} reps x {args.n} requests per variant")
    print(f"{'variant':<10} {'c':>2} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8}")
    summary = {}
    for (name, concurrency), lat in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med, p90, p99 = statistics.median(lat), _pct(lat, 0.9), _pct(lat, 0.99)
        summary[f"{name} c={concurrency}"] = {"median_ms": med * 1e3, "p90_ms": p90 * 1e3, "p99_ms": p99 * 1e3}
        print(f"{name:<10} {concurrency:>2} {med * 1e3:>10.3f} {p90 * 1e3:>8.3f} {p99 * 1e3:>8.3f}")
    for concurrency in (1, 8):
        on = statistics.median(results[("audit on", concurrency)])
        off = statistics.median(results[("audit off", concurrency)])
        print(f"c={concurrency}: audit adds {(on - off) * 1e6:+.0f} µs to the median ({(on / off - 1) * 100:+.1f}%)")
    expected = args.reps * args.n * 2 * cards_per_call  # two concurrency levels
    print(f"audit rows written during the measured runs: {rows} (expected {expected}: "
          f"{cards_per_call} cards per call)")
    print(f"cost of queueing one call and its cards (cards_issued): {queued_cost * 1e6:.1f} µs")
    print("audit drops / failed writes:", audit_metrics or "none")
    return summary


def _cost_of_queueing(writer) -> float:
    from cds_service.audit import CallFacts
    from cds_service.models import RULE_ID_EXTENSION, Card, Source

    cards = [Card(summary="x", indicator="info", source=Source(label="b"), extension={RULE_ID_EXTENSION: "r"})
             for _ in range(3)]
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        writer.cards_issued(service="s", hook="order-select", hook_instance="h", patient_id="p", cards=cards,
                            call=CallFacts(duration_s=0.001, ig_orders=1))
    cost = (time.perf_counter() - t) / n
    writer._pending.clear()  # measurement only: do not write these
    writer._queued_rows = 0
    return cost


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("-n", type=int, default=400, help="requests per variant, per rep and concurrency level")
    parser.add_argument("--database-url", default=None, help="CDS_DATABASE_URL to audit into (default SQLite)")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args()
    summary = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    sys.exit(0)
