"""Where a hook call's time goes, in-process (no socket, no HTTP parser): stage timings and a cProfile.

    python bench/profile_hot.py                 # 100-resource request, 300 calls
    python bench/profile_hot.py --size 1000 --calls 100 --top 40

The service's ASGI app is called directly (lifespan run first, so gc.freeze and the engine warm-up
happen as in production), next to the bare floor app, so the report shows the framework + service
overhead per request as a ratio. The stage table times the request-path functions one by one on the
same body: read/parse, CDS Hooks validation, gathering the record, the rules, the response.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench import gen  # noqa: E402

PATH = f"/cds-services/{gen.SERVICE_ID}"


def _scope(body: bytes) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }


async def call_asgi(app, body: bytes, chunk: int = 65536) -> tuple[int, bytes]:
    """One request through the ASGI app, the body delivered in server-sized chunks."""
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    messages.reverse()
    status = 0
    out: list[bytes] = []

    async def receive():
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(_scope(body), receive, send)
    return status, b"".join(out)


async def time_app(app, body: bytes, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        status, _ = await call_asgi(app, body)
        samples.append((time.perf_counter() - t) * 1e6)
        if status != 200:
            raise RuntimeError(f"app answered {status}")
    return samples


async def stage_times(app, body: bytes, calls: int) -> dict[str, float]:
    """Median µs of each request-path step, called the way app.call_service calls them."""
    from cds_service.body import parse_json
    from cds_service.hooks import parse_call
    from cds_service.models import encode_response
    from cds_service.response import evaluate_cards
    from cds_service.services import registry
    from cds_service.sources.gather import GatherPolicy, GatherStats, gather, prefetch_only

    settings = app.state.settings
    service = registry()[gen.SERVICE_ID]
    stages: dict[str, list[float]] = {k: [] for k in ("orjson.loads only", "parse_json (orjson + bounds check)",
                                                      "parse_call (CDS Hooks validation)", "gather (record)",
                                                      "evaluate_cards (rules)", "response dump")}
    for _ in range(calls):
        t0 = time.perf_counter()
        orjson.loads(body)
        t1 = time.perf_counter()
        data = parse_json(body, max_depth=settings.max_json_depth, max_array=settings.max_array_length)
        t2 = time.perf_counter()
        call = parse_call(service, data)
        t3 = time.perf_counter()
        policy = GatherPolicy.from_settings(settings)
        record = await gather(call, prefetch_only(call), policy, GatherStats())
        t4 = time.perf_counter()
        cards = evaluate_cards(record, call.hook, call.hook_instance)
        t5 = time.perf_counter()
        encode_response(cards)
        t6 = time.perf_counter()
        for key, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)), strict=True):
            stages[key].append((b - a) * 1e6)
    return {k: statistics.median(v) for k, v in stages.items()}


async def main_async(args) -> None:
    os.environ.setdefault("CDS_LOG_LEVEL", args.log_level)
    from bench.bare_app import app as bare
    from cds_service.cli import served_app

    app = served_app()  # as `cds-service serve` runs it, GC tuning included
    body = gen.write_requests(ROOT / "bench" / "out", (args.size,))[f"req-{args.size}"].read_bytes()
    async with app.router.lifespan_context(app), bare.router.lifespan_context(bare):
        status, answer = await call_asgi(app, body)
        cards = len(orjson.loads(answer).get("cards", []))
        print(f"{args.size} resources, {len(body):,} bytes; the service answered {status} with {cards} card(s)")
        await time_app(app, body, 20)
        await time_app(bare, body, 20)
        svc_us, bare_us = [], []
        for _ in range(5):  # interleaved, so drift hits both
            svc_us += await time_app(app, body, args.calls // 5)
            bare_us += await time_app(bare, body, args.calls // 5)
        s, b = statistics.median(svc_us), statistics.median(bare_us)
        print(f"\nin-process ASGI, median of {len(svc_us)} calls: service {s:,.0f} µs, bare floor {b:,.0f} µs "
              f"= {s / b:.2f}x the floor\n")
        stages = await stage_times(app, body, args.calls)
        total = sum(v for k, v in stages.items() if k != "orjson.loads only")
        print(f"{'stage':<40}{'median µs':>12}{'share':>8}")
        for k, v in stages.items():
            share = "" if k == "orjson.loads only" else f"{v / total:7.0%}"
            print(f"{k:<40}{v:>12,.0f}{share:>8}")
        print(f"{'sum of stages':<40}{total:>12,.0f}\n{'framework + logging (ASGI - stages)':<40}"
              f"{s - total:>12,.0f}\n")
        prof = cProfile.Profile()
        prof.enable()
        await time_app(app, body, args.calls)
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(args.top)
        st.sort_stats("cumulative").print_stats(args.top)
        print(buf.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--log-level", default="WARNING", help="service log level while profiling (logs go to stderr)")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
