"""What an audit row costs as the card table grows, with random (v4) or time-ordered (v7) card uuids.

    python bench/audit_keys.py                          # SQLite in a temporary directory, 300,000 rows
    python bench/audit_keys.py --rows 100000 --database-url postgresql+psycopg://postgres@127.0.0.1/test

The card uuid is the table's primary key. Random keys each land on a random index page, so every batch
dirties pages all over the index and the cost grows once the index outgrows the cache; time-ordered keys
are appended at the right edge. Rows go through the service's own store (``SqlStore.record_cards``) in
batches of 150, as the audit writer sends them; the figures are process CPU per row (the driver's thread
included) and wall time per row, for each fifth of the rows written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cds_service.models import new_uuid  # noqa: E402
from cds_service.store import CardRow, open_store  # noqa: E402

BATCH = 150


async def fill(url: str, rows: int, new_key) -> list[tuple[float, float]]:
    store = open_store(url)
    await store.upgrade()
    segments, per_segment = [], max(1, rows // BATCH // 5)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        for i in range(rows // BATCH):
            now = datetime.now(UTC)
            batch = [CardRow(new_key(), "neurosarcoidosis-order-select", "order-select", "ivig.dose", "warning",
                             f"hook-{i}", now, f"patient-{i % 500}") for _ in range(BATCH)]
            await store.record_cards(batch)
            if (i + 1) % per_segment == 0:
                c, w = time.process_time(), time.perf_counter()
                n = per_segment * BATCH
                segments.append(((c - cpu) / n * 1e6, (w - wall) / n * 1e6))
                cpu, wall = c, w
    finally:
        await store.close()
    return segments


async def empty_card_table(url: str) -> None:
    from cds_service.store.schema import cards

    store = open_store(url)
    await store.upgrade()
    async with store.engine.begin() as conn:
        await conn.execute(cards.delete())
    await store.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--database-url", help="default: a new SQLite file per key kind in a temporary directory")
    args = p.parse_args()
    kinds = {"random (v4)": lambda: str(uuid.uuid4()), "time-ordered (v7)": new_uuid}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'keys':<20}" + "".join(f"{'fifth ' + str(i + 1):>22}" for i in range(5)))
        for n, (name, new_key) in enumerate(kinds.items()):
            url = args.database_url or f"sqlite+aiosqlite:///{tmp}/cards-{n}.db"
            if args.database_url:  # a shared server database: start from an empty table each time
                await empty_card_table(url)
            segments = await fill(url, args.rows, new_key)
            print(f"{name:<20}" + "".join(f"{c:>9.1f} cpu {w:>6.1f} µs" for c, w in segments))


if __name__ == "__main__":
    asyncio.run(main())
