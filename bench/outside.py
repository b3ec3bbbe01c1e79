"""Where the server's CPU goes over HTTP: the ASGI call itself, and everything around it.

    python bench/outside.py                                  # synthea 100 resources, c=8, 5 s, 2 runs
    python bench/outside.py --shape relapse --size 100 --concurrency 8 --duration 5 --runs 3

Starts ``cds-service serve`` (pinned to CPU 0, h2load to CPU 1, as bench/run.py does) with three probes
installed in the server process before it loads the service:

* a task factory that times every step of every asyncio task (thread CPU and wall clock): the request tasks
  are the ASGI calls (uvicorn's ``run_asgi``, app and middleware included), the audit writer's task is its
  row building and queue handling on the event loop;
* ``gc.callbacks``: every collection, its generation and its CPU time;
* the CPU time of each thread of the process (``/proc``): the event loop's thread, the SQLite writer's.

Per request, it prints the ASGI call's CPU, the audit writer's on the loop and in its thread, the rest of the
loop's thread (uvloop, HTTP parsing, socket reads and writes, timers) and garbage collections, then p50 and
p99 from h2load's log and how much wall time the request steps spent off the CPU (another process on the
server's core). The probes cost a microsecond or two per step; compare runs of this tool with each other only.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gen  # noqa: E402

SERVICE_PATH = f"/cds-services/{gen.SERVICE_ID}"


# --------------------------------------------------------------------------- inside the server
class _Probes:
    """Totals the probes collect in the server process; written to ``path`` (and reset) on SIGUSR1."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reset()

    def reset(self) -> None:
        self.kinds: dict[str, list[float]] = {}  # kind -> [steps, cpu s, wall s]
        self.request_cpu: list[float] = []
        self.request_span: list[tuple[float, float]] = []  # (task made, task done), perf_counter seconds
        self.gc: list[tuple[int, float]] = []  # (generation, cpu s)

    def dump(self, *_args) -> None:
        Path(self.path).write_text(json.dumps({"kinds": self.kinds, "request_cpu": self.request_cpu,
                                               "request_span": self.request_span, "gc": self.gc}))
        self.reset()


def _kind(coro) -> str:
    name = getattr(coro, "__qualname__", "")
    if "run_asgi" in name:
        return "request"
    if name.startswith("AuditWriter"):
        return "audit writer"
    return "other tasks"


def _install_probes(probes: _Probes) -> None:
    import asyncio
    import gc

    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            probes.gc.append((info["generation"], time.thread_time() - started[0]))

    gc.callbacks.append(on_gc)

    class Timed:
        """Awaitable wrapper of a task's coroutine: times each ``send`` (one step of the task)."""

        def __init__(self, coro, kind: str, made: float) -> None:
            self.coro, self.kind, self.cpu, self.made = coro, kind, 0.0, made

        def __await__(self):
            return self

        def __next__(self):
            return self.send(None)

        def send(self, value):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return self.coro.send(value)
            except StopIteration:
                if self.kind == "request":
                    probes.request_cpu.append(self.cpu + time.thread_time() - cpu)
                    probes.request_span.append((self.made, time.perf_counter()))
                raise
            finally:
                spent = time.thread_time() - cpu
                self.cpu += spent
                total = probes.kinds.setdefault(self.kind, [0, 0.0, 0.0])
                total[0] += 1
                total[1] += spent
                total[2] += time.perf_counter() - wall

        def throw(self, *args):
            return self.coro.throw(*args)

        def close(self):
            return self.coro.close()

    def factory(loop, coro, **options):
        kind, made = _kind(coro), time.perf_counter()

        async def timed():
            return await Timed(coro, kind, made)

        return asyncio.Task(timed(), loop=loop, **options)

    import cds_service.cli as cli

    served_app = cli.served_app

    def probed_app():
        app = served_app()

        async def install_factory(_app) -> None:
            asyncio.get_running_loop().set_task_factory(factory)

        app.state.startup_hooks.insert(0, install_factory)
        return app

    cli.served_app = probed_app


def serve(probe_file: str, argv: list[str]) -> None:
    if os.environ.get("BENCH_TREE"):
        sys.path.insert(0, os.environ["BENCH_TREE"])
    probes = _Probes(probe_file)
    signal.signal(signal.SIGUSR1, probes.dump)
    _install_probes(probes)
    from cds_service.cli import app

    sys.argv = ["cds-service", "serve", *argv]
    app()


# --------------------------------------------------------------------------- driver
def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, by 'tid name' (schedstat: nanoseconds, where stat counts ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        out[f"{tid} {name}"] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    return out


def _h2load(url: str, body: Path, conc: int, seconds: float | None, log: Path | None = None, n: int = 0) -> None:
    cmd = ["h2load", "--h1", "-c", str(conc), "-t", "1", "-d", str(body), "-H", "content-type: application/json"]
    cmd += ["-n", str(n)] if n else ["-D", f"{int(seconds * 1000)}ms"]
    if log is not None:
        log.unlink(missing_ok=True)
        cmd.append(f"--log-file={log}")
    subprocess.run([*cmd, url], capture_output=True, check=True, timeout=(seconds or 0) + 300)


def _probe(pid: int, path: Path) -> dict:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:  # written by the server's main thread
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


def _overtaken(spans: list[list[float]]) -> int:
    """The most requests that finished while one request was in the server (first come, first served at
    concurrency c: at most c - 1)."""
    ends = sorted(end for _, end in spans)
    return max(bisect.bisect_left(ends, end) - bisect.bisect_right(ends, made) for made, end in spans)


def breakdown(probes: dict, threads: dict[str, float], latencies: list[int]) -> list[tuple[str, str]]:
    n = len(latencies)
    kinds = probes["kinds"]
    loop_tid = max(threads, key=threads.get)  # the event loop's thread does nearly all the work
    request_cpu = kinds.get("request", [0, 0.0, 0.0])
    audit_cpu = kinds.get("audit writer", [0, 0.0, 0.0])
    other_cpu = kinds.get("other tasks", [0, 0.0, 0.0])
    gc_cpu = sum(cpu for _, cpu in probes["gc"])
    rest = threads[loop_tid] - request_cpu[1] - audit_cpu[1] - other_cpu[1]
    side = {name: cpu for name, cpu in threads.items() if name != loop_tid and cpu > 0}
    per = 1e6 / n
    rows = [("requests answered", f"{n:,}"),
            ("whole process, CPU µs/req", f"{sum(threads.values()) * per:,.0f}"),
            ("  the ASGI call (request tasks), µs/req", f"{request_cpu[1] * per:,.0f}"),
            ("  audit writer on the event loop, µs/req", f"{audit_cpu[1] * per:,.0f}"),
            ("  other tasks on the event loop, µs/req", f"{other_cpu[1] * per:,.0f}"),
            ("  rest of the loop's thread (uvloop, HTTP parsing, socket I/O), µs/req", f"{rest * per:,.0f}")]
    rows += [(f"  thread {name} (the SQLite audit writer's, with the embedded store), µs/req", f"{cpu * per:,.0f}")
             for name, cpu in side.items()]
    rows.append(("  garbage collections, within the rows above (count; CPU µs/req)",
                 f"{len(probes['gc'])}; {gc_cpu * per:,.1f}"))
    if probes["request_cpu"]:
        cpu = sorted(probes["request_cpu"])
        rows.append(("ASGI call CPU p50 / p99, µs", f"{cpu[len(cpu) // 2] * 1e6:,.0f} / "
                                                    f"{cpu[int(len(cpu) * 0.99)] * 1e6:,.0f}"))
    if probes.get("request_span"):
        rows.append(("most requests answered while one was in the server", f"{_overtaken(probes['request_span'])}"))
    rows.append(("request steps off the CPU (wall - CPU), µs/req", f"{(request_cpu[2] - request_cpu[1]) * per:,.0f}"))
    lat = sorted(latencies)
    rows.append(("latency p50 / p99 / max, ms", f"{lat[n // 2] / 1000:.2f} / {lat[int(n * 0.99)] / 1000:.2f} / "
                                                f"{lat[-1] / 1000:.2f}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1], argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="synthea", choices=["synthea", "relapse"])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--warm", type=int, default=400, help="requests before the first run")
    parser.add_argument("--tree", type=Path, help="another source tree's cds_service (e.g. bench/run.py's baseline)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-outside-"))
    body = gen.write_requests(work, (args.size,), shapes=(args.shape,))[gen.body_name(args.size, args.shape)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATA_DIR=str(work / "data"), PYTHONUNBUFFERED="1")
    if args.tree is not None:  # its cds_service first on the server's import path, the probes still this file's
        env["BENCH_TREE"] = str(args.tree.resolve())
    pin = os.cpu_count() and os.cpu_count() > 1
    probe_file = work / "probes.json"
    with (work / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(probe_file),
                                   "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None)
    try:
        if pin:
            os.sched_setaffinity(0, {1})
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}{SERVICE_PATH}"
        _h2load(url, body, args.concurrency, None, n=args.warm)
        print(f"{args.shape} {args.size} resources, c={args.concurrency}, {args.duration:g} s per run")
        for run in range(args.runs):
            _probe(server.pid, probe_file)
            before = _threads(server.pid)
            h2log = work / f"h2-{run}.log"
            _h2load(url, body, args.concurrency, args.duration, h2log)
            after = _threads(server.pid)
            probes = _probe(server.pid, probe_file)
            latencies = [int(line.split()[2]) for line in h2log.read_text().splitlines() if line.strip()]
            threads = {k: after[k] - before.get(k, 0.0) for k in after}
            print(f"\nrun {run + 1}")
            for label, value in breakdown(probes, threads, latencies):
                print(f"  {label:<78} {value:>16}")
    finally:
        from bench.run import stop_process  # here: the served process (--serve) never needs bench.run

        stop_process(server)


if __name__ == "__main__":
    main()
