"""Instructions per hook call, stage by stage, counted by callgrind: exact, and unmoved by other work on the machine.

    python bench/callgrind_stages.py                       # both request shapes at 10 resources, every stage
    python bench/callgrind_stages.py --sizes 10,100 --shapes relapse --calls 20 --stages asgi,gather
    BENCH_TREE=/path/to/other/tree python bench/callgrind_stages.py ...   # another source tree, same bodies

Runs itself under ``valgrind --tool=callgrind`` with counting off. The served application (``cds-service
serve``'s, lifespan run, engine warm) answers 30 calls of the body first; then, for each stage, counting is
switched on around ``--calls`` calls of that stage alone and the count is written out: the figure is that
count over the calls. Stages: ``asgi`` (the whole in-process ASGI call, as bench/stages.py makes it), ``parse``
(orjson, bounds, CDS Hooks validation), ``gather``, ``facts``, ``stage``, ``rules``, ``render``, ``encode``.

The switch is callgrind's client request (``valgrind/callgrind.h``), reached through a C helper of four lines
compiled into ``bench/out`` on first use: it needs valgrind with its headers and a C compiler. PYTHONHASHSEED
is pinned; two runs of one tree agree to within about 1 % (card uuids and the clock differ). The audit
writer never runs while a stage is counted (no call yields to the event loop), so its work is not in these
figures: bench/stages.py and bench/run.py show it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if os.environ.get("BENCH_TREE"):  # count another source tree's service with these tools
    sys.path.insert(0, os.environ["BENCH_TREE"])

STAGES = ("asgi", "parse", "gather", "facts", "stage", "rules", "render", "encode")
WARM_CALLS = 30
_HELPER = """#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
"""


def helper(out: Path) -> Path:
    """The compiled client-request helper (made once)."""
    lib = out / "callgrind_switch.so"
    if not lib.exists():
        out.mkdir(parents=True, exist_ok=True)
        src = out / "callgrind_switch.c"
        src.write_text(_HELPER)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("a C compiler (cc or gcc) is needed to build the callgrind switch")
        done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"could not build the callgrind switch (are valgrind's headers installed?):\n"
                             f"{done.stderr}")
    return lib


def per_call(dump_dir: Path, calls: int) -> dict[str, int]:
    """Instructions per call of each stage, from the dumps of one run (``Trigger: Client Request: <stage>``)."""
    out: dict[str, int] = {}
    for path in sorted(dump_dir.glob("callgrind.out.*")):
        text = path.read_text(errors="replace")
        stage = re.search(r"^desc: Trigger: Client Request: (\S+)$", text, re.MULTILINE)
        total = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        if stage and total:
            out[stage.group(1)] = int(total.group(1)) // calls
    return out


async def _count(body: bytes, calls: int, stages: list[str], lib: str) -> None:
    """Child side: warm the served app on ``body``, then count ``calls`` calls of each stage."""
    import ctypes

    import orjson

    from bench import gen
    from bench.profile_hot import call_asgi
    from cds_service import logs
    from cds_service.body import parse_json
    from cds_service.cli import served_app
    from cds_service.clinical.cards import render_all
    from cds_service.clinical.facts import build_facts
    from cds_service.clinical.rules import run_rules
    from cds_service.clinical.stages import compute_stage
    from cds_service.clinical.thresholds import get_thresholds
    from cds_service.hooks import parse_call
    from cds_service.models import encode_response
    from cds_service.services import registry
    from cds_service.sources.gather import GatherPolicy, GatherStats, gather, prefetch_only

    switch = ctypes.CDLL(lib)
    sink = io.StringIO()  # log lines rendered as in production, into memory (the last one kept)
    # Before the application configures its loggers: their writers keep the write method they were made with.
    logs._CurrentStderr.write = lambda self, text: (sink.seek(0), sink.truncate(), sink.write(text))[2]
    app = served_app()
    async with app.router.lifespan_context(app):
        for _ in range(WARM_CALLS):
            status, _ = await call_asgi(app, body)
            if status != 200:
                raise SystemExit(f"the service answered {status}")
        settings = app.state.settings
        service = registry(settings)[gen.SERVICE_ID]
        policy = GatherPolicy.from_settings(settings)
        th = get_thresholds()
        data = orjson.loads(body)
        call = parse_call(service, data)
        record = await gather(call, prefetch_only(call), policy, GatherStats())
        facts = build_facts(record, th)
        stage = compute_stage(facts, th)
        fired = run_rules(facts, stage, service.engine_hook, th, groups=service.rule_groups)
        cards = render_all(fired, facts, th)

        async def one(name: str) -> None:
            if name == "asgi":
                await call_asgi(app, body)
            elif name == "parse":
                parse_call(service, parse_json(body, max_depth=settings.max_json_depth,
                                               max_array=settings.max_array_length))
            elif name == "gather":
                await gather(call, prefetch_only(call), policy, GatherStats())
            elif name == "facts":
                build_facts(record, th)
            elif name == "stage":
                compute_stage(facts, th)
            elif name == "rules":
                run_rules(facts, stage, service.engine_hook, th, groups=service.rule_groups)
            elif name == "render":
                render_all(fired, facts, th)
            elif name == "encode":
                encode_response(cards)

        for name in stages:
            for _ in range(5):
                await one(name)
            switch.cg_start()
            for _ in range(calls):
                await one(name)
            switch.cg_stop(name.encode())
        if app.state.audit is not None:
            await app.state.audit.flush()


def count(body_path: Path, calls: int, stages: list[str], lib: Path) -> dict[str, int]:
    """Parent side: run the child under callgrind on one body; instructions per call by stage."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONHASHSEED="0")
        env.setdefault("CDS_LOG_LEVEL", "INFO")
        env.setdefault("CDS_DATA_DIR", str(ROOT / "bench" / "out" / "stages-data"))
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/callgrind.out.%p",
               sys.executable, __file__, "--child", str(body_path), "--calls", str(calls),
               "--stages", ",".join(stages), "--lib", str(lib)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the counted run failed:\n{done.stderr[-2000:]}")
        return per_call(Path(tmp), calls)


def table(results: dict[str, dict[str, int]], stages: list[str]) -> str:
    cols = list(results)
    lines = ["| stage (instructions per call) | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for s in stages:
        lines.append(f"| {s} | " + " | ".join(f"{results[c].get(s, 0):,}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10")
    p.add_argument("--shapes", default="synthea,relapse")
    p.add_argument("--calls", type=int, default=20, help="counted calls of each stage")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(sorted(unknown))} (stages: {', '.join(STAGES)})")
    if args.child is not None:
        asyncio.run(_count(args.child.read_bytes(), args.calls, stages, args.lib))
        return
    from bench import gen

    out = ROOT / "bench" / "out"
    lib = helper(out)
    results: dict[str, dict[str, int]] = {}
    for shape in args.shapes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            name = gen.body_name(n, shape)
            body = gen.write_requests(out, (n,), shapes=(shape,))[name]
            results[f"{shape} {n}"] = count(body, args.calls, stages, lib)
            print(f"{shape} {n}: {results[f'{shape} {n}']}", file=sys.stderr, flush=True)
    print(table(results, stages), end="")


if __name__ == "__main__":
    main()
