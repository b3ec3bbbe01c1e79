"""What one replay-cache sighting costs against a real Redis: the shipped Lua call (records the jti and reads
the memory marker in one round trip) beside a bare ``SET key 1 NX EX ttl`` (records the jti only).

Short blocks, alternated, and the difference taken within each pair: on a shared machine the time per
round trip swings by half between seconds, far more than the difference measured. Wall time per sighting
and this process's CPU time per sighting (the client's share, without Redis's) are both reported.

    python bench/replay_cost.py                          # redis://127.0.0.1:6379/0, 40 pairs of 250 sightings
    python bench/replay_cost.py --url redis://host:6379/1 --reps 60 -n 500 --concurrency 8

Keys live under a throw-away prefix and are deleted afterwards; nothing else in the Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from cds_service.replay.redis import RedisReplayCache, connect, redis_key


async def _bare(cache: RedisReplayCache, jti: str) -> bool:
    return not await cache.client.set(redis_key("iss", jti, cache.prefix), b"1", nx=True, ex=300)


async def _shipped(cache: RedisReplayCache, jti: str) -> bool:
    return await cache.seen(jti, "iss", 300)


async def _run(cache: RedisReplayCache, sight, n: int, concurrency: int) -> tuple[float, float]:
    """Mean wall and client-CPU microseconds per sighting, ``concurrency`` callers sharing the client."""
    per_caller = n // concurrency

    async def caller(k: int) -> None:
        for i in range(per_caller):
            await sight(cache, f"{uuid.uuid4().hex}-{k}-{i}")

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    count = per_caller * concurrency
    return (time.perf_counter() - started) / count * 1e6, (time.process_time() - cpu) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("-n", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    cache = RedisReplayCache(connect(args.url), prefix=f"cds-bench:{uuid.uuid4().hex}:", owns_client=True)
    try:
        await _run(cache, _shipped, 200, 1)  # warm: connections, script loaded
        await _run(cache, _bare, 200, 1)
        pairs = []
        for rep in range(args.reps):
            order = (_bare, _shipped) if rep % 2 == 0 else (_shipped, _bare)
            got = {fn: await _run(cache, fn, args.n, args.concurrency) for fn in order}
            pairs.append((got[_bare], got[_shipped]))
        for what, i in (("wall", 0), ("client CPU", 1)):
            bare = statistics.median(b[i] for b, _ in pairs)
            shipped = statistics.median(s[i] for _, s in pairs)
            diff = statistics.median(s[i] - b[i] for b, s in pairs)
            print(f"{what:10s} per sighting, c={args.concurrency}: bare SET NX {bare:6.1f} µs, "
                  f"shipped {shipped:6.1f} µs; paired difference median {diff:+.1f} µs")
    finally:
        keys = [k async for k in cache.client.scan_iter(match=cache.prefix + "*", count=1000)]
        for i in range(0, len(keys), 1000):
            await cache.client.delete(*keys[i:i + 1000])
        await cache.close()


if __name__ == "__main__":
    asyncio.run(main())
