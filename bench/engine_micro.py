"""Micro-benchmark of the clinical engine and the JSON bounds check, in-process, no HTTP.

    python bench/engine_micro.py                       # sizes 10,100,1000
    python bench/engine_micro.py --sizes 100 --runs 2000
    python bench/engine_micro.py --json out.json       # also write the medians as JSON

For each size it builds one ``order-select`` request with :func:`bench.gen.build_request` (real Synthea
resources plus the clinical core and an IVIG draft order), then reports the median and p90 of:

* the bounds check ``check_bounds`` on the raw bytes, with ``orjson.loads`` of the same bytes for scale;
* ``engine.evaluate`` with the memo caches warm (a steady service: the same codes and texts come back in
  every request);
* ``engine.evaluate`` with every engine memo cache cleared before each call (the first request to carry
  these codes and resources: the worst case).

Every call gets a freshly gathered :class:`~cds_service.clinical.record.PatientRecord` (gathering is not timed), so
notes appended by one evaluation never leak into the next, and only one record is alive at a time, as in
the service. Runs of the sizes are interleaved in rounds so
a burst of load on the machine hits every size alike; the figures are medians of all runs. Run it on a
quiet machine: on 2 shared cores other work moves the figures by tens of percent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench import gen  # noqa: E402


def clear_engine_caches() -> None:
    """Empty every per-process memo the engine keeps (not the loaded value sets or card texts)."""
    from cds_service.clinical import terminology

    terminology.clear_caches()


class Case:
    """One request size: the raw body, its parsed form and a way to get fresh records."""

    def __init__(self, size: int) -> None:
        from cds_service.config import Settings
        from cds_service.hooks import parse_call
        from cds_service.services import registry

        self.size = size
        self.body = orjson.dumps(gen.build_request(size))
        self.settings = Settings()
        self.data = orjson.loads(self.body)
        self.call = parse_call(registry()[gen.SERVICE_ID], self.data)
        self.loop = asyncio.new_event_loop()

    def record(self) -> Any:
        from cds_service.sources.gather import GatherPolicy, GatherStats, gather, prefetch_only

        policy = GatherPolicy(deadline_seconds=5.0)
        return self.loop.run_until_complete(gather(self.call, prefetch_only(self.call), policy,
                                                   GatherStats()))

    def close(self) -> None:
        self.loop.close()


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_us": statistics.median(s), "p90_us": s[int(len(s) * 0.9)], "n": len(s)}


def run(sizes: list[int], runs: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    from cds_service.body import check_bounds
    from cds_service.clinical import engine

    engine.warm_up()
    cases = [Case(n) for n in sizes]
    samples: dict[int, dict[str, list[float]]] = {
        c.size: {k: [] for k in ("orjson.loads", "check_bounds", "evaluate (warm)",
                                 "evaluate (cold caches)")}
        for c in cases}
    per_round = max(1, runs // rounds)
    for c in cases:  # warm the memo caches and check the request really answers cards
        ev = engine.evaluate(c.record(), c.call.hook)
        if not ev.cards:
            raise SystemExit(f"{c.size} resources: the engine answered no cards; the benchmark request is wrong")
    gc.collect()
    gc.freeze()
    for _ in range(rounds):
        for c in cases:
            n = max(1, per_round // max(1, c.size // 100))  # fewer calls of the big request per round
            depth, arr = c.settings.max_json_depth, c.settings.max_array_length
            s = samples[c.size]
            for _ in range(n):
                t0 = time.perf_counter()
                orjson.loads(c.body)
                t1 = time.perf_counter()
                check_bounds(c.body, depth, arr)
                t2 = time.perf_counter()
                s["orjson.loads"].append((t1 - t0) * 1e6)
                s["check_bounds"].append((t2 - t1) * 1e6)
            # one live record at a time, as in the service (a list of them would make every GC pass longer)
            for _ in range(n):
                rec = c.record()
                t0 = time.perf_counter()
                engine.evaluate(rec, c.call.hook)
                s["evaluate (warm)"].append((time.perf_counter() - t0) * 1e6)
            for _ in range(max(1, n // 4)):
                rec = c.record()
                clear_engine_caches()
                t0 = time.perf_counter()
                engine.evaluate(rec, c.call.hook)
                s["evaluate (cold caches)"].append((time.perf_counter() - t0) * 1e6)
    for c in cases:
        c.close()
    return {str(size): {k: _stats(v) for k, v in d.items()} for size, d in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000", help="comma-separated resource counts")
    p.add_argument("--runs", type=int, default=1000, help="calls per size (1000-resource size: a tenth)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds over the sizes")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = ""
    results = run(sizes, args.runs, args.rounds)
    print(f"engine micro-benchmark ({load})")
    print(f"{'resources':>9} {'step':<24}{'median µs':>11}{'p90 µs':>10}{'n':>7}")
    for size, steps in results.items():
        for step, st in steps.items():
            print(f"{size:>9} {step:<24}{st['median_us']:>11,.1f}{st['p90_us']:>10,.1f}{st['n']:>7}")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
