"""CPU time of ``build_facts`` alone, per request shape and size, and a dump of every fact it reads.

    python bench/facts_micro.py                          # medians, both shapes at 10 and 100 resources
    python bench/facts_micro.py --sizes 10,100,1000 --calls 400
    python bench/facts_micro.py --profile relapse:100    # cProfile of build_facts on one body
    python bench/facts_micro.py --dump out.txt           # the Facts of every fixture and bench body
    BENCH_TREE=/path/to/other/tree python bench/facts_micro.py ...   # the same, on another source tree

Each call gets its own copy of the gathered record (``build_facts`` appends to ``record.notes``); only
``build_facts`` is timed, with the thread's CPU time (time waiting for a core stays out). The engine is
warmed up first (as the service's lifespan does), so the memos hold what a steady service holds. Shapes and
sizes are interleaved in rounds, so a burst of load hits every case alike. ``--dump`` writes ``repr`` of
the Facts and the record's notes of every fixture (both hooks) and bench body: two trees that read the same
facts write the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("BENCH_TREE"):
    sys.path.insert(0, os.environ["BENCH_TREE"])
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

clock = time.thread_time


def _record(request: dict, hook: str = "order-select"):
    from cds_service.evaluate import service_for
    from cds_service.hooks import evaluation_time, parse_call
    from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

    call = parse_call(service_for(hook), request)
    record = asyncio.run(gather(call, prefetch_only(call), GatherPolicy(deadline_seconds=5.0)))
    now = evaluation_time(request.get("extension"))
    if now is not None:
        record.now = now
    return record


def bench_record(shape: str, n: int):
    from bench import gen

    return _record(gen.relapse_request(n) if shape == "relapse" else gen.build_request(n))


def fresh(record):
    return dataclasses.replace(record, notes=list(record.notes))


_JUNK = bytearray(16 << 20)


def evict_caches() -> None:
    """Touch 16 MB: the processor's caches then hold none of the engine's code and data, nor the
    interpreter's (harsher than a hook call, whose other stages run the same interpreter)."""
    for i in range(0, len(_JUNK), 64):
        _JUNK[i] = 1


class Pipeline:
    """The rest of a hook call around build_facts, as the service runs it: parse the body and gather the
    record before, stage + rules + cards + encoding after. Between two calls of build_facts these evict
    the facts' code and data from the processor's caches as they do in the service (a loop of build_facts
    alone runs from warm caches, two to three times faster than in the service)."""

    def __init__(self, request: dict, hook: str = "order-select") -> None:
        import orjson

        self.body = orjson.dumps(request)
        self.hook = hook
        self.loop = asyncio.new_event_loop()
        self.facts = None

    def before(self):
        import orjson

        from cds_service.evaluate import service_for
        from cds_service.hooks import evaluation_time, parse_call
        from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

        request = orjson.loads(self.body)
        call = parse_call(service_for(self.hook), request)
        record = self.loop.run_until_complete(gather(call, prefetch_only(call), GatherPolicy(deadline_seconds=5.0)))
        now = evaluation_time(request.get("extension"))
        if now is not None:
            record.now = now
        return record

    def after(self, record, facts) -> None:
        import orjson

        from cds_service.clinical import engine
        from cds_service.clinical.cards import render_all
        from cds_service.clinical.rules import run_rules
        from cds_service.clinical.stages import compute_stage
        from cds_service.clinical.thresholds import get_thresholds
        from cds_service.models import CDSResponse, dump

        th = get_thresholds()
        fired = run_rules(facts, compute_stage(facts, th), self.hook, th)
        cards = render_all(fired, facts, th)
        engine._add_data_notes(cards, [*record.notes, *facts.notes])
        orjson.dumps(dump(CDSResponse(cards=cards)))


def time_cases(cases: dict[str, Pipeline], calls: int, rounds: int = 10,
               between: str = "pipeline") -> dict[str, tuple[float, float]]:
    """(median of every call, lowest median of a round) per case, µs. On a shared machine the second
    moves less: a round that ran while another process held the core is left out. ``between``: what runs
    between two calls: ``pipeline`` (the rest of the hook call, :class:`Pipeline`), ``evict``
    (:func:`evict_caches`), ``none`` (warm caches: a lower bound the service never sees)."""
    from cds_service.clinical.facts import build_facts

    samples: dict[str, list[list[float]]] = {k: [] for k in cases}
    records = {k: p.before() for k, p in cases.items()}
    for name, p in cases.items():
        for _ in range(5):
            r = fresh(records[name])
            p.after(r, build_facts(r))
    for _ in range(rounds):
        for name, p in cases.items():
            got = []
            for _ in range(max(1, calls // rounds)):
                r = p.before() if between == "pipeline" else fresh(records[name])
                if between == "evict":
                    evict_caches()
                t = clock()
                facts = build_facts(r)
                got.append((clock() - t) * 1e6)
                if between == "pipeline":
                    p.after(r, facts)
            samples[name].append(got)
    return {k: (statistics.median([x for r in v for x in r]), min(statistics.median(r) for r in v))
            for k, v in samples.items()}


def fixture_records() -> dict[str, object]:
    from cds_service.evaluate import build_request

    out = {}
    for path in sorted((ROOT / "fixtures" / "fhir").glob("*.json")):
        bundle = json.loads(path.read_text())
        for hook in ("order-select", "order-sign"):
            try:
                out[f"{path.name} {hook}"] = _record(build_request(bundle, hook), hook)
            except Exception as exc:  # noqa: BLE001 - a fixture the request builder refuses is reported as such
                out[f"{path.name} {hook}"] = f"build error {exc}"
    return out


def dump(path: Path, sizes: list[int]) -> None:
    from cds_service.clinical.facts import build_facts

    cases = fixture_records()
    for shape in ("synthea", "relapse"):
        for n in sizes:
            rec = cases[f"bench {shape} {n}"] = bench_record(shape, n)
            rec.now = rec.now.replace(hour=12, minute=0, second=0, microsecond=0)  # the same instant in both runs
    lines = []
    for name, rec in cases.items():
        if isinstance(rec, str):
            lines.append(f"{name}: {rec}")
            continue
        for attempt in ("cold", "warm"):  # the first call fills the memos, the second reads them
            r = fresh(rec)
            try:
                facts = build_facts(r)
                lines.append(f"{name} {attempt}: {facts!r}\nnotes: {r.notes!r}")
            except Exception as exc:  # noqa: BLE001 - the engine's retry path handles these; record the error
                lines.append(f"{name} {attempt}: raised {type(exc).__name__}: {exc}")
    path.write_text("\n".join(lines) + "\n")
    print(f"{len(cases)} cases written to {path}", file=sys.stderr)


def profile(spec: str, calls: int, top: int) -> None:
    import cProfile
    import pstats

    from cds_service.clinical.facts import build_facts

    shape, n = spec.split(":")
    rec = bench_record(shape, int(n))
    for _ in range(20):
        build_facts(fresh(rec))
    prof = cProfile.Profile(time.thread_time)  # CPU time: waiting for a core stays out
    recs = [fresh(rec) for _ in range(calls)]
    prof.enable()
    for r in recs:
        build_facts(r)
    prof.disable()
    st = pstats.Stats(prof)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100")
    p.add_argument("--shapes", default="synthea,relapse")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--between", choices=("pipeline", "evict", "none"), default="pipeline",
                   help="what runs between two calls (see time_cases)")
    p.add_argument("--fixtures", action="store_true", help="also time every fixture (order-select), summed")
    p.add_argument("--profile", help="shape:size, e.g. relapse:100")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--dump", type=Path)
    p.add_argument("--repeat", help="shape:size:N: run build_facts N times, untimed (for callgrind: run N=0 "
                                    "and N=100 under valgrind --tool=callgrind, PYTHONHASHSEED=0; subtract)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    from cds_service.cli import tune_gc
    from cds_service.clinical.engine import warm_up

    warm_up()
    tune_gc()  # the collector as the served app runs it
    if args.dump:
        dump(args.dump, sizes)
        return
    if args.repeat:
        shape, n, times = args.repeat.split(":")
        from cds_service.clinical.facts import build_facts

        rec = bench_record(shape, int(n))
        build_facts(fresh(rec))
        recs = [fresh(rec) for _ in range(int(times))]
        for r in recs:
            build_facts(r)
        return
    if args.profile:
        profile(args.profile, args.calls, args.top)
        return
    from bench import gen

    cases = {f"{shape} {n}": Pipeline(gen.relapse_request(n) if shape == "relapse" else gen.build_request(n))
             for shape in args.shapes.split(",") for n in sizes}
    if args.fixtures:
        from cds_service.evaluate import build_request

        for path in sorted((ROOT / "fixtures" / "fhir").glob("*.json")):
            try:
                cases[f"{path.name} order-select"] = Pipeline(build_request(json.loads(path.read_text()),
                                                                            "order-select"))
            except Exception:  # noqa: BLE001, S112 - a fixture the request builder refuses is left out
                continue
    medians = time_cases(cases, args.calls, between=args.between)
    for name in [k for k in medians if not k.endswith("order-select")]:
        print(f"{name:>14}: {medians[name][0]:8,.0f} µs median, {medians[name][1]:8,.0f} µs best round")
    fx = [v for k, v in medians.items() if k.endswith("order-select")]
    if fx:
        print(f"{'fixtures':>14}: {sum(m for m, _ in fx):8,.0f} µs summed over {len(fx)} (medians), "
              f"{sum(b for _, b in fx):8,.0f} µs (best rounds)")


if __name__ == "__main__":
    main()
