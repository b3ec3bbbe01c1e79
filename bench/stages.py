"""Per-stage time of a hook call, in-process, beside the bare floor: where each microsecond goes.

    python bench/stages.py                              # both request shapes at 10, 100 and 1,000 resources
    python bench/stages.py --sizes 10,100 --calls 200 --json bench/out/stages.json

For each request shape (``bench/gen.py``: Synthea filler, or a relapse on prednisone with labs and an IVIG
order set) and size, the service's ASGI app and the bare floor app (``bench/bare_app.py``) are called
directly, interleaved, and each step of the request path is timed on the same body the way
``cds_service.app`` runs it:

parse + bounds (orjson, structural bounds, CDS Hooks validation), auth (one ES384 and one RS384 token
through the authenticator, and the signature check alone), gather (the record from prefetch), facts,
stage + rules, card rendering, encoding (the response JSON), and the per-call bookkeeping (the
``hook_answered`` log line, metrics, the audit queue entry and, later, its row). "framework" is the
ASGI call minus the stages it runs (auth is off in the ASGI call). Medians of the thread's CPU time in µs
(time waiting for a core on a busy machine is left out; the audit row, written on the store's thread, is
the process's CPU time); the machine state still moves them, so compare rows of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if os.environ.get("BENCH_TREE"):  # time another source tree's service (bench/run.py --baseline), these tools
    sys.path.insert(0, os.environ["BENCH_TREE"])

import orjson  # noqa: E402

from bench import gen  # noqa: E402
from bench.profile_hot import PATH, call_asgi  # noqa: E402

# CPU time of this thread: on a busy machine, time spent waiting for a core stays out of the figures.
clock = time.thread_time
AUDIT_BATCH = 20
STAGES = ("parse + bounds", "gather", "facts", "stage + rules", "card rendering", "encoding",
          "log + metrics + audit")
AUTH = ("auth ES384", "auth RS384", "ES384 signature only", "RS384 signature only")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class AuthProbe:
    """An authenticator with pinned keys and an in-memory replay cache, and a fresh token per call."""

    def __init__(self) -> None:
        from bench.run import ISSUER, Minter
        from cds_service.auth import Authenticator
        from cds_service.auth.issuers import parse_trusted_issuers
        from cds_service.auth.jwks import JwksCache
        from cds_service.replay import MemoryReplayCache

        self.minter = Minter()
        issuers = parse_trusted_issuers(orjson.dumps({ISSUER: {"jwks": self.minter.jwks}}).decode())
        self.auth = Authenticator(issuers, JwksCache(lambda: None), MemoryReplayCache(),
                                  public_base_url="http://127.0.0.1:8000")
        self.audience = "http://127.0.0.1:8000" + PATH
        self.tokens: dict[str, list[str]] = {}

    def request(self, token: str):
        from starlette.requests import Request

        return Request({"type": "http", "method": "POST", "path": PATH, "root_path": "", "scheme": "http",
                        "query_string": b"", "server": ("127.0.0.1", 8000),
                        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {token}".encode())]})

    def prepare(self, calls: int) -> None:
        for alg in ("ES384", "RS384"):
            self.tokens[alg] = self.minter.tokens(alg, self.audience, 2 * calls + 5)

    async def time_one(self, alg: str) -> tuple[float, float]:
        """µs of one full authentication and of the signature check alone (same key, a fresh token)."""
        import jwt

        token = self.tokens[alg].pop()
        request = self.request(token)
        t0 = clock()
        await self.auth.authenticate(request, PATH)
        t1 = clock()
        key = await self.auth.jwks.key(self.auth.issuers[next(iter(self.auth.issuers))], f"bench-{alg.lower()}",
                                       alg, None)
        signing_input, _, signature = self.tokens[alg].pop().rpartition(".")
        sig = jwt.utils.base64url_decode(signature)
        t2 = clock()
        ok = key.Algorithm.verify(signing_input.encode(), key.key, sig)
        t3 = clock()
        assert ok
        return (t1 - t0) * 1e6, (t3 - t2) * 1e6


def evaluate_stages(record, hook: str) -> dict:
    """What ``cds_service.app.answer`` does, step by step: facts, stage + rules, card rendering, encoding.

    Reaches into the engine's steps (``engine._evaluate`` is the reference); the cards and the encoded body
    come back under "cards" and "encoded", the µs of each step under its stage name."""
    from cds_service.clinical import engine
    from cds_service.clinical.cards import render_all
    from cds_service.clinical.facts import build_facts
    from cds_service.clinical.rules import run_rules
    from cds_service.clinical.stages import compute_stage
    from cds_service.clinical.thresholds import get_thresholds
    try:
        from cds_service.models import encode_response
    except ImportError:  # a tree whose cards are pydantic models (bench/run.py --baseline)
        from cds_service.models import CDSResponse, dump

        def encode_response(cards):
            return orjson.dumps(dump(CDSResponse(cards=cards)))

    th = get_thresholds()
    t0 = clock()
    facts = build_facts(record, th)
    t1 = clock()
    fired = run_rules(facts, compute_stage(facts, th), hook, th)
    t2 = clock()
    cards = render_all(fired, facts, th)
    engine._add_data_notes(cards, [*record.notes, *facts.notes])
    t3 = clock()
    encoded = encode_response(cards)
    t4 = clock()
    return {"cards": cards, "encoded": encoded, "facts": (t1 - t0) * 1e6, "stage + rules": (t2 - t1) * 1e6,
            "card rendering": (t3 - t2) * 1e6, "encoding": (t4 - t3) * 1e6}


async def stage_times(app, body: bytes, calls: int, auth: AuthProbe | None) -> dict[str, float]:
    from cds_service import logs
    from cds_service.hooks import parse_call
    from cds_service.services import registry
    from cds_service.sources.gather import GatherPolicy, GatherStats, gather, prefetch_only

    settings = app.state.settings
    service = registry(settings)[gen.SERVICE_ID]
    policy = GatherPolicy.from_settings(settings)
    log = logs.get_logger("cds_service.app")
    metrics = getattr(app.state, "metrics", None)
    audit = app.state.audit
    samples: dict[str, list[float]] = {k: [] for k in (*STAGES, *AUTH)}
    if auth is not None:
        auth.prepare(calls)
    from cds_service.body import parse_json

    for _ in range(calls):
        t0 = clock()
        data = parse_json(body, max_depth=settings.max_json_depth, max_array=settings.max_array_length)
        call = parse_call(service, data)
        t1 = clock()
        stats = GatherStats()
        record = await gather(call, prefetch_only(call), policy, stats)
        t2 = clock()
        parts = evaluate_stages(record, service.engine_hook)
        cards, body_out = parts.pop("cards"), parts.pop("encoded")
        t3 = clock()
        if audit is not None:
            audit.cards_issued(service=service.id, hook=call.hook, hook_instance=call.hook_instance,
                               patient_id=call.patient_id, cards=cards)
        if metrics is not None:
            metrics.hook_answered(call.hook, t3 - t0, cards, stats)
        logs.hot_info(log, "hook_answered", service=service.id, hook=call.hook, hookInstance=call.hook_instance,
                      cards=len(cards), prefetched=stats.prefetched, fetched=stats.fetched,
                      fhir_ms=round(stats.fhir_seconds * 1000, 1), ms=round((t3 - t0) * 1000, 2),
                      notes=len(record.notes))
        t4 = clock()
        if audit is not None and audit.queued >= AUDIT_BATCH * len(cards):
            t5 = time.process_time()  # the rows are written on the store's own thread: count every thread
            await audit.flush()
            samples.setdefault(f"audit row, per call (written later, {AUDIT_BATCH} calls a batch)", []).append(
                (time.process_time() - t5) * 1e6 / AUDIT_BATCH)
        samples["parse + bounds"].append((t1 - t0) * 1e6)
        samples["gather"].append((t2 - t1) * 1e6)
        for k, v in parts.items():
            samples.setdefault(k, []).append(v)
        samples["log + metrics + audit"].append((t4 - t3) * 1e6)
        # Freed here, outside the timed steps: otherwise the next call's parse (and gather) would time the
        # freeing of this call's parsed body and record. The ASGI call pays it, so it shows in "framework".
        del body_out, data, call, record, parts, cards
        if auth is not None:
            for alg in ("ES384", "RS384"):
                full, sig = await auth.time_one(alg)
                samples[f"auth {alg}"].append(full)
                samples[f"{alg} signature only"].append(sig)
    return {k: _median(v) for k, v in samples.items() if v}


async def time_app(app, body: bytes, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        t = clock()
        status, _ = await call_asgi(app, body)
        samples.append((clock() - t) * 1e6)
        if status != 200:
            raise RuntimeError(f"app answered {status}")
    return samples


async def measure(app, bare, body: bytes, calls: int, auth: AuthProbe | None) -> dict[str, float]:
    await time_app(app, body, 10)
    await time_app(bare, body, 10)
    svc, flo = [], []
    for _ in range(5):  # interleaved, so drift hits both
        svc += await time_app(app, body, max(1, calls // 5))
        flo += await time_app(bare, body, max(1, calls // 5))
    out = {"service ASGI": _median(svc), "floor ASGI": _median(flo)}
    stages = await stage_times(app, body, calls, auth)
    out |= stages
    out["framework"] = out["service ASGI"] - sum(stages.get(k, 0.0) for k in STAGES if k != "log + metrics + audit") \
        - stages.get("log + metrics + audit", 0.0)
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    cols = list(results)
    keys: list[str] = []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    order = ["service ASGI", "floor ASGI", *STAGES, "framework", *AUTH]
    keys = [k for k in order if k in keys] + [k for k in keys if k not in order]
    lines = ["| stage (median µs) | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{results[c].get(k, float('nan')):,.0f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


async def main_async(args) -> dict[str, dict[str, float]]:
    os.environ.setdefault("CDS_LOG_LEVEL", "INFO")
    os.environ.setdefault("CDS_DATA_DIR", str(ROOT / "bench" / "out" / "stages-data"))
    from bench.bare_app import app as bare
    from cds_service import logs
    from cds_service.cli import served_app

    sink = io.StringIO()  # the log lines are written (and rendered) as in production, into memory
    # Before the application configures its loggers: their writers keep the write method they were made with.
    logs._CurrentStderr.write = lambda self, text: sink.write(text)  # type: ignore[method-assign]
    app = served_app()  # as `cds-service serve` runs it, GC tuning included
    out = ROOT / "bench" / "out"
    results: dict[str, dict[str, float]] = {}
    auth = AuthProbe() if args.auth else None
    async with app.router.lifespan_context(app), bare.router.lifespan_context(bare):
        for shape in args.shapes:
            for n in args.sizes:
                name = gen.body_name(n, shape)
                body = gen.write_requests(out, (n,), shapes=(shape,))[name].read_bytes()
                status, _ = await call_asgi(app, body)
                if status != 200:
                    raise SystemExit(f"{name}: the service answered {status}")
                if app.state.audit is not None:  # the store opens after the first call: not part of a row's cost
                    await app.state.audit.store.ping()
                    await app.state.audit.flush()
                calls = max(20, args.calls // (10 if n >= 1000 else 1))
                results[f"{shape} {n}"] = await measure(app, bare, body, calls, auth)
                print(f"{shape} {n}: service {results[f'{shape} {n}']['service ASGI']:,.0f} µs, floor "
                      f"{results[f'{shape} {n}']['floor ASGI']:,.0f} µs", file=sys.stderr, flush=True)
                sink.seek(0)
                sink.truncate()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--shapes", default=",".join(gen.SHAPES))
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--no-auth", dest="auth", action="store_false")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.shapes = args.shapes.split(",")
    try:
        import uvloop

        results = uvloop.run(main_async(args))
    except ImportError:
        results = asyncio.run(main_async(args))
    text = table(results)
    print(text)
    if args.json:
        args.json.write_bytes(orjson.dumps(results))


if __name__ == "__main__":
    main()
