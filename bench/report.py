"""Small, dependency-free helpers for the benchmark: percentiles, medians, h2load/wrk parsing, Markdown tables."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class RunResult:
    """One load run against one server."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # failed + errored + timed out + non-2xx
    tool: str = "h2load"
    extra: dict = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


_H2_RPS = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_H2_REQ = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout")
_H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def parse_h2load(stdout: str, log_lines: Sequence[str]) -> RunResult:
    """req/s and error counts from h2load's summary; p50/p99 from its per-request log (µs, 3rd column)."""
    rps = _H2_RPS.search(stdout)
    req = _H2_REQ.search(stdout)
    status = _H2_STATUS.search(stdout)
    if not (rps and req and status):
        raise ValueError("h2load output not understood:\n" + stdout[-2000:])
    latencies = []
    non_2xx = 0
    for line in log_lines:
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        if not parts[1].startswith("2"):
            non_2xx += 1
        latencies.append(int(parts[2]) / 1000)
    failed, errored, timeout = (int(req.group(i)) for i in (5, 6, 7))
    non_2xx = max(non_2xx, sum(int(status.group(i)) for i in (2, 3, 4)))
    return RunResult(rps=float(rps.group(1)), p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                     requests=int(req.group(4)), errors=failed + errored + timeout + non_2xx)


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")


def parse_wrk(stdout: str) -> RunResult:
    """Throughput and errors from wrk; its latency figures are not used (wrong at low connection counts here)."""
    rps = _WRK_RPS.search(stdout)
    total = _WRK_TOTAL.search(stdout)
    if not (rps and total):
        raise ValueError("wrk output not understood:\n" + stdout[-2000:])
    errors = 0
    if m := _WRK_NON2XX.search(stdout):
        errors += int(m.group(1))
    if m := _WRK_SOCKET.search(stdout):
        errors += sum(int(g) for g in m.groups())
    return RunResult(rps=float(rps.group(1)), p50_ms=math.nan, p99_ms=math.nan, requests=int(total.group(1)),
                     errors=errors, tool="wrk")


def fmt(value: float, digits: int = 2) -> str:
    """Numbers for tables: thousands separators for rates, a dash for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (l or r), numbers right-aligned by default."""
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError("align needs one letter per column")
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns: {row!r}")
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")
