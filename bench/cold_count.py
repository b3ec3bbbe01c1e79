"""Instructions from exec of ``cds-service serve`` to its first hook answer, counted by callgrind.

    python bench/cold_count.py                       # this tree, two runs
    python bench/cold_count.py --baseline main       # that git ref beside this tree, in turn

The served process runs under ``valgrind --tool=callgrind`` and ends itself (``os._exit``) once it has sent
the whole answer to one 10-resource hook call (``gen.build_request(10)``), so the count covers exactly the
start and the first call, whatever else runs on the machine. Each tree's ``cds_service`` is compiled to
bytecode first (as ``run.py``'s cold-start scenario does), ``PYTHONHASHSEED=0``. Two runs of one tree differ
by about 0.01 %. Instructions undercount imports a little against CPU time (their cost is partly memory
and file reads), so read them beside ``run.py --scenarios cold``; they do not move with the machine's load.
Needs valgrind (``apt-get install -y valgrind``); about a minute per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import gen  # noqa: E402
from run import SERVICE_PATH, compile_sources, export_baseline  # noqa: E402

# Run as ``python -c`` in the served process: `cds-service serve` whose application ends the process once its
# first HTTP answer has been sent.
SERVE_UNTIL_FIRST_ANSWER = r"""
import os, sys
from cds_service import cli

made = cli.served_app


def served_app():
    app = made()

    async def until_first_answer(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def sending(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                os._exit(0)
        return await app(scope, receive, sending)
    return until_first_answer


cli.served_app = served_app
cli.main(["serve", "--host", "127.0.0.1", "--port", sys.argv[1]])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count(tree: Path, body: bytes, work: Path) -> int:
    """Instructions of one start of ``tree``'s service up to its first answer."""
    port = free_port()
    out = work / f"callgrind-{port}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(PYTHONPATH=str(tree), PYTHONHASHSEED="0", CDS_DATA_DIR=str(work / f"data-{port}"))
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               "-c", SERVE_UNTIL_FIRST_ANSWER, str(port)], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    while server.poll() is None:
        try:
            request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=600) as reply:
                reply.read()
        except OSError:  # not listening yet; or the server ended while answering, as it does
            time.sleep(0.2)
    server.wait()
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no callgrind summary in {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="git ref to count beside this tree (exported with git archive)")
    p.add_argument("--runs", type=int, default=2, help="starts per tree (default 2)")
    p.add_argument("--json", type=Path, help="write the counts here")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    trees = {"service": ROOT}
    with tempfile.TemporaryDirectory(prefix="cold-count-") as tmp:
        work = Path(tmp)
        if args.baseline:
            trees["baseline"] = export_baseline(args.baseline, work)
        for tree in trees.values():
            compile_sources(tree)
        body = json.dumps(gen.build_request(10)).encode()
        counts: dict[str, list[int]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                counts[name].append(count(tree, body, work))
                print(f"{name}: {counts[name][-1]:,} instructions", flush=True)
    for name, runs in counts.items():
        line = f"{name}: median {statistics.median(runs):,.0f} instructions exec -> first answer"
        if name != "service":
            line += f" (service / {name}: {statistics.median(counts['service']) / statistics.median(runs):.3f})"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
