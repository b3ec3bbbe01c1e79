"""Benchmark the CDS service against a bare Starlette + orjson floor, and check the latency budget.

    python bench/run.py            # full run, ~4-5 minutes, writes bench/RESULTS.md
    python bench/run.py --quick    # ~1 minute smoke run (shorter runs, one repetition)

Scenarios (see bench/README.md): (1) prefetched order-select at 10/100/1,000 resources, concurrency 1
and 8, service and floor alternated A B A B, h2load for latency and throughput, wrk as a throughput
cross-check; (2) FHIR fallback (no prefetch) against a fake FHIR server with a fixed delay; (3) JWT
verification on, with pre-minted unique tokens through bench/loaddrv.py; (4) cold start, exec to the
first answered hook call.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench import gen  # noqa: E402
from bench.report import (  # noqa: E402
    RunResult,
    fmt,
    machine_info,
    markdown_table,
    median,
    parse_h2load,
    parse_wrk,
    verdict,
)
from cds_service.services import registry  # noqa: E402

PREFETCH = registry()["neurosarcoidosis-order-select"].prefetch

BENCH = ROOT / "bench"
SERVICE_PATH = f"/cds-services/{gen.SERVICE_ID}"
ISSUER = "https://issuer.example"
INSTALL_HINT = {
    "h2load": "apt-get update && apt-get install -y nghttp2-client   (Debian/Ubuntu; macOS: brew install nghttp2)",
    "wrk": "apt-get update && apt-get install -y wrk   (macOS: brew install wrk)",
}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pinner(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Server:
    """A child process serving HTTP on a loopback port; started and stopped by us (by pid)."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], cpu: int | None, logdir: Path,
                 cwd: Path = ROOT):
        self.name, self.argv, self.port, self.env, self.cpu, self.cwd = name, argv, port, env, cpu, cwd
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        logf = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                     preexec_fn=_pinner(self.cpu), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, as an operator stops a server; killed when it has not ended 10 s later."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def service_env(port: int, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_HOST="127.0.0.1", CDS_PORT=str(port), CDS_DATA_DIR=str(out / "data"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def service_argv(port: int, tree: Path | None = None) -> list[str]:
    """``cds-service serve``; for another source tree (``--baseline``), ``python -m cds_service`` run in it
    (its working directory comes first on ``-m``'s import path)."""
    exe = Path(sys.executable).parent / "cds-service"
    head = [str(exe)] if exe.exists() and tree is None else [sys.executable, "-m", "cds_service"]
    return [*head, "serve", "--host", "127.0.0.1", "--port", str(port)]


def tree_env(env: dict[str, str], tree: Path | None) -> dict[str, str]:
    """``env`` with ``tree`` first on the import path (its cds_service shadows the installed one)."""
    if tree is not None:
        env = {**env, "PYTHONPATH": os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])}
    return env


def export_baseline(ref: str, out: Path) -> Path:
    """``git archive`` of ``ref`` into ``out/baseline-<ref>``: the code to compare against, same venv."""
    tree = out / f"baseline-{ref.replace('/', '-')}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.rmtree(tree / "bench")  # the measuring tools stay this tree's; only the service is the baseline's
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True,
                         text=True).stdout.strip()
    (tree / ".bench-ref").write_text(f"{ref} {sha}")
    return tree


def uvicorn_argv(target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


# --------------------------------------------------------------------------- load tools
def h2load(url: str, body: Path, conc: int, duration: float, logfile: Path, headers: list[str] = ()) -> RunResult:
    cmd = ["h2load", "--h1", "-c", str(conc), "-t", "1", "-D", f"{int(duration * 1000)}ms", "-d", str(body),
           "-H", "content-type: application/json", f"--log-file={logfile}", url]
    for h in headers:
        cmd[-1:-1] = ["-H", h]
    logfile.unlink(missing_ok=True)  # h2load appends to an existing log: stale runs would join the percentiles
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    lines = logfile.read_text().splitlines() if logfile.exists() else []
    return parse_h2load(proc.stdout + proc.stderr, lines)


def h2load_count(url: str, body: Path, conc: int, n: int) -> None:
    """Warm-up: a fixed number of requests, results ignored."""
    subprocess.run(["h2load", "--h1", "-c", str(conc), "-t", "1", "-n", str(n), "-d", str(body),
                    "-H", "content-type: application/json", url], capture_output=True, timeout=300)


def wrk(url: str, body: Path, conc: int, duration: float, out: Path) -> RunResult:
    script = out / f"post-{body.stem}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    proc = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{duration:g}s", "-s", str(script), url],
                          capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(proc.stdout)


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    parts = url.split("/", 3)
    host, path = parts[2], "/" + parts[3]
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- scenario 1
def scenario_prefetch(args, services: dict[str, Server], bare: Server, bodies: dict[str, Path], out: Path) -> dict:
    """Every service and the floor, alternated A B (C) within each repetition, per shape, size and concurrency."""
    rows: dict[str, dict] = {}
    targets = [*services.items(), ("bare", bare)]
    for shape in args.shapes:
        for n in args.sizes:
            body = bodies[gen.body_name(n, shape)]
            warm = 60 if n >= 1000 else 400
            for _name, server in targets:
                h2load_count(server.url + SERVICE_PATH, body, 4, warm)
            for conc in args.concurrency:
                key = f"{shape}/{n}/{conc}"
                runs: dict[str, list[RunResult]] = {name: [] for name, _ in targets}
                for rep in range(args.reps):  # A B A B: the machine's drift hits all alike
                    for name, server in targets:
                        cpu = _cpu_ms(server.proc.pid)
                        r = h2load(server.url + SERVICE_PATH, body, conc, args.duration,
                                   out / f"h2-{name}-{shape}-{n}-{conc}-{rep}.log")
                        r.extra["cpu_us"] = (_cpu_ms(server.proc.pid) - cpu) * 1000 / max(1, r.requests)
                        runs[name].append(r)
                        log(f"  {shape:<8} {n:>5} res  c={conc}  {name:<8} rep {rep + 1}: {r.rps:8,.0f} req/s  "
                            f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  CPU {r.extra['cpu_us']:7.0f} µs/req  "
                            f"errors {r.errors}")
                rows[key] = {"shape": shape, "n": n, "conc": conc,
                             "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
                             "services": {name: summarise(runs[name], runs["bare"]) for name in services}}
            if args.wrk and (not args.quick or n == 100) and shape == args.shapes[0]:
                wconc = max(args.concurrency)
                w = {}
                for name, server in targets:
                    w[name] = wrk(server.url + SERVICE_PATH, body, wconc, args.wrk_duration, out)
                    log(f"  {shape:<8} {n:>5} res  c={wconc}  {name:<8} wrk:   {w[name].rps:8,.0f} req/s  "
                        f"errors {w[name].errors}")
                rows[f"{shape}/{n}/{wconc}"]["wrk"] = {k: asdict(v) for k, v in w.items()}
    return rows


def summarise(svc: list[RunResult], bare: list[RunResult]) -> dict:
    """Medians over repetitions; ratios paired within each repetition (same moment, same machine state),
    with their smallest and largest value as the spread."""
    rps = [s.rps / b.rps for s, b in zip(svc, bare, strict=True) if b.rps]
    # The server's own CPU time per request (user + system, /proc): the floor's over the service's is the
    # throughput ratio the two would have with a core each to themselves, whatever else the machine runs.
    cpu = [b.extra["cpu_us"] / s.extra["cpu_us"] for s, b in zip(svc, bare, strict=True)
           if s.extra.get("cpu_us") and b.extra.get("cpu_us")]
    p99 = [s.p99_ms / b.p99_ms for s, b in zip(svc, bare, strict=True) if b.p99_ms]
    return {
        "svc_rps": median([r.rps for r in svc]), "bare_rps": median([r.rps for r in bare]),
        "rps_ratio": median(rps), "rps_ratio_min": min(rps, default=0.0), "rps_ratio_max": max(rps, default=0.0),
        "svc_p50": median([r.p50_ms for r in svc]), "bare_p50": median([r.p50_ms for r in bare]),
        "svc_p99": median([r.p99_ms for r in svc]), "bare_p99": median([r.p99_ms for r in bare]),
        "p99_ratio": median(p99), "p99_ratio_min": min(p99, default=0.0), "p99_ratio_max": max(p99, default=0.0),
        "svc_tail": median([r.p99_ms / r.p50_ms for r in svc if r.p50_ms]),
        "svc_errors": sum(r.errors for r in svc), "bare_errors": sum(r.errors for r in bare),
        "svc_requests": sum(r.requests for r in svc),
        "svc_cpu_us": median([r.extra.get("cpu_us", float("nan")) for r in svc]),
        "bare_cpu_us": median([r.extra.get("cpu_us", float("nan")) for r in bare]),
        "cpu_ratio": median(cpu) if cpu else float("nan"), "cpu_ratio_min": min(cpu, default=float("nan")),
        "cpu_ratio_max": max(cpu, default=float("nan")),
    }


# --------------------------------------------------------------------------- scenario 2
def scenario_fallback(args, svc: Server, fake: Server, out: Path) -> dict:
    body = out / "req-fallback.json"
    body.write_bytes(orjson.dumps(gen.build_request(100, fhir_server=fake.url + "/fhir", with_prefetch=False)))
    status, answer = post(svc.url + SERVICE_PATH, body.read_bytes())
    if status != 200:
        raise RuntimeError(f"fallback request answered {status}: {answer[:500]!r}")
    h2load_count(svc.url + SERVICE_PATH, body, 4, 40)
    result: dict = {"delay_ms": args.fhir_delay_ms, "keys": len(PREFETCH), "runs": {}}
    for conc in args.concurrency:
        _fake_stats(fake, reset=True)
        r = h2load(svc.url + SERVICE_PATH, body, conc, args.fallback_duration, out / f"h2-fallback-{conc}.log")
        stats = _fake_stats(fake)
        result["runs"][conc] = asdict(r) | {"fhir_requests": stats["requests"],
                                            "max_in_flight": stats["max_in_flight"]}
        log(f"  fallback c={conc}: {r.rps:7,.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
            f"errors {r.errors}  FHIR requests {stats['requests']} (max {stats['max_in_flight']} in flight)")
    return result


def _fake_stats(fake: Server, reset: bool = False) -> dict:
    conn = http.client.HTTPConnection(f"127.0.0.1:{fake.port}", timeout=5)
    try:
        conn.request("DELETE" if reset else "GET", "/_stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- scenario 3
def auth_available() -> bool:
    """True when the auth module exists and has its install() hook (it is being written by another engineer)."""
    try:
        spec = importlib.util.find_spec("cds_service.auth")
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    try:
        module = importlib.import_module("cds_service.auth")
    except Exception:  # noqa: BLE001 - a half-written module counts as absent
        return False
    return hasattr(module, "install")


class Minter:
    """ES384 and RS384 signing keys, their JWKS, and unique-jti tokens for one audience."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        self.keys = {"ES384": ec.generate_private_key(ec.SECP384R1()),
                     "RS384": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        jwks = []
        for alg, key in self.keys.items():
            algo = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
            jwk = algo.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=f"bench-{alg.lower()}", alg=alg, use="sig")
            jwks.append(jwk)
        self.jwks = {"keys": jwks}

    def tokens(self, alg: str, audience: str, n: int) -> list[str]:
        import jwt

        now = int(time.time())
        key = self.keys[alg]
        headers = {"kid": f"bench-{alg.lower()}", "typ": "JWT"}
        return [jwt.encode({"iss": ISSUER, "sub": "bench-client", "aud": audience, "iat": now, "exp": now + 300,
                            "jti": uuid.uuid4().hex}, key, algorithm=alg, headers=headers) for _ in range(n)]


def scenario_jwt(args, services: dict[str, Server], bare: Server, fake: Server, out: Path, body: Path) -> dict:
    from bench import loaddrv

    if not auth_available():
        log("  skipped: cds_service.auth has not landed (no module with install()); re-run once it exists")
        return {"skipped": "cds_service.auth is not installed yet (no module with install())"}
    minter = Minter()
    (out / "jwks.json").write_bytes(orjson.dumps(minter.jwks))
    issuers = {ISSUER: {"jwks_url": f"{fake.url}/jwks.json"}}
    secured: dict[str, Server] = {}
    try:
        for name in services:
            port = free_port()
            env = tree_env(service_env(port, out, CDS_TRUSTED_ISSUERS=json.dumps(issuers),
                                       CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}"), args.trees.get(name))
            secured[name] = Server(f"{name}-auth", service_argv(port, args.trees.get(name)), port, env,
                                   args.server_cpu, out, cwd=args.trees.get(name) or ROOT).start()
        payload = body.read_bytes()
        first = secured["service"].url + SERVICE_PATH
        probe, probe_stats = loaddrv.run(first, payload, minter.tokens("ES384", first, 1), 1)
        refused, _ = loaddrv.run(first, payload, [None], 1)
        if probe.errors:
            status = probe_stats.sample_status
            log(f"  JWT probe failed: HTTP {status} {probe_stats.sample_body[:300]!r}; "
                f"see {secured['service'].log_path}")
            return {"error": f"a valid ES384 token was answered with HTTP {status}",
                    "log": str(secured["service"].log_path),
                    "sample": probe_stats.sample_body.decode(errors="replace")[:1000]}
        variants = []
        for name in services:
            url = secured[name].url + SERVICE_PATH
            variants += [(f"{name}+JWT ES384", url, "ES384"), (f"{name}+JWT RS384", url, "RS384"),
                         (f"{name}, auth off", services[name].url + SERVICE_PATH, None)]
        variants.append(("bare", bare.url + SERVICE_PATH, None))
        pids = {"bare": bare.proc.pid}
        for name in services:
            pids |= {f"{name}+JWT ES384": secured[name].proc.pid, f"{name}+JWT RS384": secured[name].proc.pid,
                     f"{name}, auth off": services[name].proc.pid}
        for _name, u, alg in variants:  # warm-up
            loaddrv.run(u, payload, minter.tokens(alg, u, 100) if alg else [None] * 100, 4)
        result: dict = {"requests_per_run": args.jwt_requests, "unauthenticated_status":
                        next(iter(refused.extra["statuses"]), None), "runs": {}}
        for conc in args.jwt_concurrency:
            runs: dict[str, list[RunResult]] = {name: [] for name, *_ in variants}
            for _rep in range(args.reps):
                for name, u, alg in variants:
                    tokens = minter.tokens(alg, u, args.jwt_requests) if alg else [None] * args.jwt_requests
                    pid = pids[name]
                    cpu = _cpu_ms(pid)
                    r, _stats = loaddrv.run(u, payload, tokens, conc)
                    r.extra["cpu_us"] = (_cpu_ms(pid) - cpu) * 1000 / max(1, r.requests)
                    runs[name].append(r)
                    log(f"  JWT c={conc} {name:<22}: {r.rps:8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                        f"p99 {r.p99_ms:6.2f} ms  CPU {r.extra['cpu_us']:6.0f} µs/req  errors {r.errors}")
            cell: dict = {}
            for name, rs in runs.items():
                owner = name.split("+")[0].split(",")[0]
                off = runs.get(f"{owner}, auth off")
                vs_off = [r.rps / o.rps for r, o in zip(rs, off, strict=True)] if off and "JWT" in name else []
                cpu_off = ([o.extra["cpu_us"] / r.extra["cpu_us"] for r, o in zip(rs, off, strict=True)
                            if r.extra.get("cpu_us") and o.extra.get("cpu_us")] if off and "JWT" in name else [])
                cell[name] = {"rps": median([r.rps for r in rs]), "p50": median([r.p50_ms for r in rs]),
                              "p99": median([r.p99_ms for r in rs]), "errors": sum(r.errors for r in rs),
                              "vs_bare": median([r.rps / b.rps for r, b in zip(rs, runs["bare"], strict=True)]),
                              "vs_auth_off": median(vs_off) if vs_off else None,
                              "vs_auth_off_min": min(vs_off, default=None),
                              "vs_auth_off_max": max(vs_off, default=None),
                              "cpu_us": median([r.extra.get("cpu_us", float("nan")) for r in rs]),
                              "cpu_vs_auth_off": median(cpu_off) if cpu_off else None,
                              "cpu_vs_auth_off_min": min(cpu_off, default=None),
                              "cpu_vs_auth_off_max": max(cpu_off, default=None)}
            result["runs"][conc] = cell
        return result
    finally:
        for server in secured.values():
            server.stop()


# --------------------------------------------------------------------------- scenario 4
def _cpu_ms(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc), in ms; NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def compile_sources(tree: Path) -> None:
    """The tree's ``cds_service`` compiled to bytecode beside its sources, as pip leaves an installed wheel.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE`` set compiles every module it imports at every start
    (about 90 modules); measured like that, a cold start would depend on who runs the benchmark. Python checks
    each ``.pyc`` against its source when it loads it, so none can be stale."""
    import compileall

    compileall.compile_dir(tree / "cds_service", quiet=1)


def cold_start(args, out: Path, body: bytes) -> dict:
    """exec -> first 200 of a real hook call (10 resources), the CPU time the process used until then (less
    moved by other work on the machine than the wall time), and the second call's time. The apps are
    started in turn, A B (C) per repetition, each tree's sources compiled to bytecode first."""
    apps = [*((name, service_argv, args.trees.get(name)) for name in args.service_names), ("bare", None, None)]
    for _name, _argv, tree in apps[:-1]:
        compile_sources(tree or ROOT)
    runs: dict[str, dict[str, list[float]]] = {name: {"first": [], "cpu": [], "second": []} for name, *_ in apps}
    for i in range(args.cold_reps):
        for name, argv_of, tree in apps:
            port = free_port()
            argv = argv_of(port, tree) if argv_of else uvicorn_argv("bench.bare_app:app", port)
            env = tree_env(service_env(port, out), tree)
            logf = (out / f"cold-{name}-{i}.log").open("wb")
            started = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=tree or ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    preexec_fn=_pinner(args.server_cpu), start_new_session=True)
            try:
                first = cpu = None
                while time.perf_counter() - started < 60 and proc.poll() is None:
                    try:
                        status, _ = post(f"http://127.0.0.1:{port}{SERVICE_PATH}", body)
                    except OSError:
                        time.sleep(0.003)
                        continue
                    if status == 200:
                        first = time.perf_counter() - started
                        cpu = _cpu_ms(proc.pid)
                    break
                t = time.perf_counter()
                post(f"http://127.0.0.1:{port}{SERVICE_PATH}", body)
                second = time.perf_counter() - t
            finally:
                stop_process(proc)
            if first is None:
                raise RuntimeError(f"cold start of {name} failed; see {out / f'cold-{name}-{i}.log'}")
            runs[name]["first"].append(first * 1000)
            runs[name]["cpu"].append(cpu)
            runs[name]["second"].append(second * 1000)
    result = {}
    for name, r in runs.items():
        firsts = r["first"]
        result[name] = {"first_ms": median(firsts), "min_ms": min(firsts), "max_ms": max(firsts),
                        "cpu_ms": median(r["cpu"]), "second_ms": median(r["second"]), "runs_ms": firsts}
        log(f"  cold start {name}: exec -> first 200 median {median(firsts):.0f} ms "
            f"({min(firsts):.0f}..{max(firsts):.0f}), CPU {median(r['cpu']):.0f} ms; "
            f"2nd request {median(r['second']):.1f} ms")
    return result


# --------------------------------------------------------------------------- scenario 5
def scenario_stages(args, out: Path) -> dict:
    """bench/stages.py for each tree (this one and the baseline), pinned like the servers."""
    result = {}
    for name in args.service_names:
        path = out / f"stages-{name}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        env.update(CDS_DATA_DIR=str(out / f"stages-data-{name}"), CDS_LOG_LEVEL="INFO")
        if args.trees.get(name):
            env["BENCH_TREE"] = str(args.trees[name])
        cmd = [sys.executable, str(BENCH / "stages.py"), "--sizes", ",".join(map(str, args.sizes)),
               "--shapes", ",".join(args.shapes), "--calls", str(args.stage_calls), "--json", str(path)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
                              preexec_fn=_pinner(args.server_cpu))
        if proc.returncode != 0:
            log(f"  stages for {name} failed:\n{proc.stderr[-2000:]}")
            continue
        result[name] = orjson.loads(path.read_bytes())
        log(f"  stages for {name}: done")
    return result


# --------------------------------------------------------------------------- scenario 6
def scenario_decode(args, out: Path) -> list:
    """bench/decode.py (this tree), pinned to the server CPU: what decoding the body costs four ways."""
    path = out / "decode.json"
    cmd = [sys.executable, str(BENCH / "decode.py"), "--sizes", ",".join(map(str, args.sizes)),
           "--shapes", ",".join(args.shapes), "--json", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          preexec_fn=_pinner(args.server_cpu))
    if proc.returncode != 0:
        log(f"  decode failed:\n{proc.stderr[-2000:]}")
        return []
    return orjson.loads(path.read_bytes())


# --------------------------------------------------------------------------- report
def engine_state() -> str:
    clinical = ROOT / "cds_service" / "clinical"
    if not clinical.is_dir():
        return "placeholder (the clinical engine had not landed: no rules ran, no cards)"
    return "real clinical engine (cds_service/clinical/)"


def _spread(row: dict, key: str) -> str:
    return f"{row[key]:.2f}x ({row[key + '_min']:.2f}..{row[key + '_max']:.2f})"


def budget(results: dict, args) -> list[tuple[str, str, str, bool | None]]:
    """The targets of issue 16, each from the same run's side-by-side measurements."""
    out = []
    conc = max(args.concurrency)
    for shape in args.shapes:
        for n, target in ((100, 0.40), (10, 0.30)):
            row = results["prefetch"].get(f"{shape}/{n}/{conc}")
            if not row:
                continue
            r = row["services"]["service"]
            out.append((f"{shape}: throughput at {n} resources, c={conc}, vs the floor", f">= {target:.2f}x",
                        _spread(r, "rps_ratio"), r["rps_ratio"] >= target))
            if "cpu_ratio" in r and r["cpu_ratio"] == r["cpu_ratio"]:  # measured (not NaN)
                out.append((f"{shape}: the same, CPU-normalised (server CPU per request, floor / service)",
                            f">= {target:.2f}x", _spread(r, "cpu_ratio"), r["cpu_ratio"] >= target))
            if n == 100:
                out.append((f"{shape}: p99 at 100 resources, c={conc}, vs the floor's p99", "<= 3x",
                            _spread(r, "p99_ratio"), r["p99_ratio"] <= 3))
    if results["prefetch"]:
        errors = sum(r["services"]["service"]["svc_errors"] for r in results["prefetch"].values())
        requests = sum(r["services"]["service"]["svc_requests"] for r in results["prefetch"].values())
        out.append(("service errors (all prefetch runs)", "0", f"{errors} of {requests:,}", errors == 0))
    jw = (results.get("jwt") or {}).get("runs") or {}
    cell = jw.get(conc) or jw.get(str(conc))
    if cell and cell.get("service+JWT ES384", {}).get("vs_auth_off") is not None:
        v = cell["service+JWT ES384"]
        out.append((f"auth on (ES384) vs auth off, 100 resources, c={conc}", ">= 0.80x",
                    f"{v['vs_auth_off']:.2f}x ({v['vs_auth_off_min']:.2f}..{v['vs_auth_off_max']:.2f})",
                    v["vs_auth_off"] >= 0.80))
        if v.get("cpu_vs_auth_off") is not None:
            out.append(("the same, CPU-normalised (server CPU per request, auth off / auth on)", ">= 0.80x",
                        f"{v['cpu_vs_auth_off']:.2f}x ({v['cpu_vs_auth_off_min']:.2f}..{v['cpu_vs_auth_off_max']:.2f})",
                        v["cpu_vs_auth_off"] >= 0.80))
    fb = results.get("fallback")
    if fb and 1 in fb["runs"]:
        p50 = fb["runs"][1]["p50_ms"]
        d = fb["delay_ms"]
        out.append((f"FHIR fallback, all {fb['keys']} keys missing, c=1 p50 (one round trip = {d:g} ms, "
                    f"sequential = {d * fb['keys']:g} ms)", f"< {2 * d:g} ms (2 round trips)", f"{p50:.1f} ms",
                    p50 < 2 * d and fb["runs"][1]["errors"] == 0))
    cs = results.get("cold_start")
    if cs:
        first = cs["service"]["first_ms"]
        out.append(("cold start, exec -> first hook answer (median)", "< 1000 ms", f"{first:.0f} ms", first < 1000))
    return out


def render(results: dict, args, machine: dict, command: str) -> str:
    names = args.service_names
    trees = {name: (args.trees[name] / ".bench-ref").read_text() if args.trees.get(name) else "this tree"
             for name in names}
    lines = ["# Benchmark results", "",
             f"Produced by `{command}` on {machine['date']}.", "",
             f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['os']}, Python {machine['python']}. "
             f"Server pinned to CPU {args.server_cpu}, load tools to CPU {args.load_cpu}"
             if args.pin else f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}; "
             "no CPU pinning.",
             "", "Load average (1/5/15 min) at the start: " + "/".join(f"{x:.2f}" for x in results["load_start"])
             + ", at the end: " + "/".join(f"{x:.2f}" for x in results.get("load_end", ()))
             + " (this run's own processes included; other work on the machine moves the figures).", "",
             *([f"**The machine was loaded**: a load average of {results['load_start'][0]:.1f} on "
                f"{machine['nproc']} CPUs means other work shared the cores with the servers and the load tools. "
                "Absolute figures are far below what the same code does on an idle machine and vary from run to "
                "run; only the side-by-side ratios (each paired within one repetition, spread shown) compare "
                "like with like.", ""]
               if results["load_start"][0] > int(machine["nproc"]) else []),
             f"Clinical engine: {results['engine']}.", "",
             "Services compared: " + ", ".join(f"`{n}` = {t}" for n, t in trees.items()) + "; `bare` = the floor.",
             "", f"Cards answered per request (sample before the runs): {results['cards']}.", "",
             "Method: each service (`cds-service serve`: uvicorn, uvloop + httptools, 1 worker, gc.freeze in the "
             "lifespan, JSON logs on, written to a file) and the bare floor (`bench/bare_app.py`, Starlette + "
             "orjson, same server settings) driven in turn, A B (C) within each repetition, by `h2load --h1`, "
             f"{args.duration:g} s per run, {args.reps} repetition(s); medians over repetitions, ratios paired "
             "within a repetition, (min..max) over the repetitions. p50/p99 come from h2load's per-request log. "
             "wrk is a throughput cross-check only. CPU µs/req: the server process's own CPU time (user + system, "
             "from /proc) during a run divided by the requests it answered; the floor's over the service's is the "
             "CPU-normalised ratio, the throughput ratio the two would have with a core each to themselves.", "",
             "## Budget (issue 16)", ""]
    lines.append(markdown_table(["check", "target", "measured (min..max)", "verdict"],
                                [(a, b, c, verdict(d)) for a, b, c, d in budget(results, args)], "llrl"))
    shapes = {"synthea": "Synthea filler around an IVIG draft order (`bench/gen.py` default)",
              "relapse": "relapse on a prednisone taper, months of labs, an IVIG order set (`gen.relapse_request`)"}
    lines += ["## 1. Prefetched order-select", ""]
    lines += [f"- `{k}`: {v}" for k, v in shapes.items() if k in args.shapes] + [""]
    rows = []
    for r in results["prefetch"].values():
        w = r.get("wrk")
        for name, v in r["services"].items():
            rows.append((r["shape"], str(r["n"]), str(r["conc"]), name, v["svc_rps"], v["bare_rps"],
                         _spread(v, "rps_ratio"), v.get("svc_cpu_us", float("nan")),
                         v.get("bare_cpu_us", float("nan")),
                         _spread(v, "cpu_ratio") if "cpu_ratio" in v else "–", v["svc_p50"], v["bare_p50"],
                         v["svc_p99"], v["bare_p99"], _spread(v, "p99_ratio"),
                         f"{v['svc_errors']}/{v['bare_errors']}",
                         f"{fmt(w[name]['rps'])} / {fmt(w['bare']['rps'])}" if w else "–"))
    lines.append(markdown_table(
        ["shape", "resources", "conc", "service", "req/s", "bare req/s", "req/s vs bare", "CPU µs/req",
         "bare CPU µs/req", "CPU-normalised vs bare", "p50 ms", "bare p50 ms", "p99 ms", "bare p99 ms",
         "p99 vs bare", "errors svc/bare", "wrk req/s svc / bare"],
        rows, "lrrlrrrrrrrrrrrrr"))
    sizes = {gen.body_name(n, sh): ROOT / "bench" / "out" / f"{gen.body_name(n, sh)}.json"
             for sh in args.shapes for n in args.sizes}
    lines += ["Request bodies: " + ", ".join(f"{k} = {p.stat().st_size / 1024:,.0f} KB"
                                               for k, p in sizes.items() if p.exists()) + ".", ""]
    st = results.get("stages") or {}
    lines += ["## 2. Where a call's time goes (in-process, per stage)", ""]
    if st:
        lines += ["`bench/stages.py`, pinned to the server CPU: the ASGI app called directly (no socket) beside the "
                  "floor app, then each step of the request path timed on the same body; median µs. "
                  "\"framework\" = the ASGI call minus its stages (freeing the call's parsed body and record "
                  "included). Auth rows: one fresh token through the authenticator, and the signature check alone.",
                  ""]
        from bench.stages import table

        for name, res in st.items():
            lines += [f"### {name} ({trees[name]})", "", table(res)]
    else:
        lines += ["Not measured.", ""]
    fb = results.get("fallback")
    lines += ["## 3. FHIR fallback (fhirServer, no prefetch)", ""]
    if fb:
        lines += [f"Fake FHIR server (`bench/fake_fhir.py`) answers every read/search after {fb['delay_ms']:g} ms; "
                  f"the service has to fetch all {fb['keys']} prefetch keys. One round trip = {fb['delay_ms']:g} ms, "
                  f"all keys one after another = {fb['delay_ms'] * fb['keys']:g} ms.", ""]
        lines.append(markdown_table(
            ["conc", "req/s", "p50 ms", "p99 ms", "p50 / one round trip", "FHIR requests per hook call",
             "max FHIR requests in flight", "errors"],
            [(str(c), r["rps"], r["p50_ms"], r["p99_ms"], f"{r['p50_ms'] / fb['delay_ms']:.2f}",
              f"{r['fhir_requests'] / r['requests']:.1f}" if r["requests"] else "–", str(r["max_in_flight"]),
              str(r["errors"])) for c, r in fb["runs"].items()]))
    else:
        lines += ["Not measured in this run.", ""]
    lines += ["## 4. JWT verification on", ""]
    jw = results.get("jwt") or {}
    if "runs" in jw:
        lines += [f"Driver: `bench/loaddrv.py` (asyncio HTTP/1.1 keep-alive, one pre-minted token with a unique "
                  f"`jti` per request, `aud` = the exact URL called), {jw['requests_per_run']:,} requests per run, "
                  "100-resource Synthea request; the same driver on each service without auth and on the bare floor. "
                  f"A request without a token was answered HTTP {jw['unauthenticated_status']}.", ""]
        jrows = []
        for conc, variants in jw["runs"].items():
            for name, v in variants.items():
                off = (f"{v['vs_auth_off']:.2f}x ({v['vs_auth_off_min']:.2f}..{v['vs_auth_off_max']:.2f})"
                       if v.get("vs_auth_off") is not None else "–")
                cpu_off = "–"
                if v.get("cpu_vs_auth_off") is not None:
                    cpu_off = (f"{v['cpu_vs_auth_off']:.2f}x "
                               f"({v['cpu_vs_auth_off_min']:.2f}..{v['cpu_vs_auth_off_max']:.2f})")
                jrows.append((str(conc), name, v["rps"], f"{v['vs_bare']:.2f}x", off, v.get("cpu_us", float("nan")),
                              cpu_off, v["p50"], v["p99"], str(v["errors"])))
        lines.append(markdown_table(["conc", "variant", "req/s", "vs bare", "vs own auth off", "CPU µs/req",
                                     "CPU-normalised vs own auth off", "p50 ms", "p99 ms", "errors"], jrows,
                                    "llrrrrrrrr"))
    else:
        lines += [f"Not measured: {jw.get('skipped') or jw.get('error') or 'not run'}.", ""]
    cs = results.get("cold_start")
    lines += ["## 5. Cold start", ""]
    if cs:
        lines += [f"exec of `cds-service serve` to the first 200 on a 10-resource hook call, {args.cold_reps} "
                  "starts each, in turn; `bench/bare_app.py` under uvicorn for reference. Each tree's sources are "
                  "compiled to bytecode first, as pip installs a wheel. CPU = user + system time "
                  "the server process had used when the first answer arrived (less moved by the machine's other "
                  "work than the wall time).", ""]
        lines.append(markdown_table(["app", "exec -> first 200, median ms", "min..max ms", "CPU ms (median)",
                                     "2nd request ms"],
                                    [(k, v["first_ms"], f"{v['min_ms']:.0f}..{v['max_ms']:.0f}", v["cpu_ms"],
                                      v["second_ms"]) for k, v in cs.items()]))
    dec = results.get("decode")
    if dec:
        lines += ["", "## 6. Decoding the body", "",
                  "`bench/decode.py`, pinned to the server CPU, best of 7 runs, gc frozen as in the server: the "
                  "whole body into dicts (orjson, what the service and the floor do), only the elements the engine "
                  "reads per resource type (values still dicts), the same elements as nested typed Structs (the "
                  "ceiling of a typed decode), and resourceType + id only (the floor of any decode that visits "
                  "every resource). µs per body.", ""]
        names = list(dec[0]["us"])
        rows = [(d["shape"], d["resources"], f"{d['kb']:.0f}", *[f"{d['us'][n]:,.0f}" for n in names]) for d in dec]
        lines.append(markdown_table(["shape", "resources", "KB", *[f"{n} µs" for n in names]], rows,
                                    "lr" + "r" * (1 + len(names))))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark the CDS service against a bare floor.")
    p.add_argument("--quick", action="store_true", help="~1 minute: 2 s runs, one repetition, fewer cross-checks")
    p.add_argument("--sizes", default="10,100,1000", help="prefetched resources per request")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--duration", type=float, help="seconds per h2load run (default 3, quick 2)")
    p.add_argument("--reps", type=int, help="A B repetitions per cell (default 4, quick 1)")
    p.add_argument("--shapes", default=",".join(gen.SHAPES), help=f"request shapes: {', '.join(gen.SHAPES)}")
    p.add_argument("--baseline", help="also run this git ref's service (e.g. main), side by side, same venv")
    p.add_argument("--stage-calls", type=int, default=200, help="calls per size in the per-stage timing")
    p.add_argument("--jwt-requests", type=int, help="requests per JWT run (default 2000, quick 600)")
    p.add_argument("--jwt-concurrency", help="concurrency of the JWT runs (default: --concurrency)")
    p.add_argument("--cold-reps", type=int, help="starts per app in the cold-start scenario (default 5, quick 3)")
    p.add_argument("--scenarios", default="prefetch,stages,fallback,jwt,cold,decode",
                   help="comma list of prefetch, stages, fallback, jwt, cold, decode")
    p.add_argument("--fhir-delay-ms", type=float, default=50.0)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and load tool to CPUs")
    p.add_argument("--no-wrk", dest="wrk", action="store_false", help="skip the wrk throughput cross-check")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.scenarios = set(args.scenarios.split(","))
    args.shapes = [sh for sh in args.shapes.split(",") if sh]
    args.service_names = ["service"] + (["baseline"] if args.baseline else [])
    args.trees = {}
    # Short runs, more of them: this VM's CPU speed swings by a third from one half-second to the next
    # (a pinned busy loop shows it), so many closely paired A B runs give steadier ratios than a few long.
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.reps = args.reps or (1 if args.quick else 4)
    args.wrk_duration = 2.0 if args.quick else 3.0
    args.fallback_duration = 2.0 if args.quick else 4.0
    args.jwt_requests = args.jwt_requests or (600 if args.quick else 2000)
    args.jwt_concurrency = ([int(c) for c in args.jwt_concurrency.split(",")] if args.jwt_concurrency
                            else args.concurrency)
    args.cold_reps = args.cold_reps or (3 if args.quick else 5)
    ncpu = os.cpu_count() or 1
    args.pin = args.pin and ncpu >= 2 and hasattr(os, "sched_setaffinity")
    args.server_cpu, args.load_cpu = (0, 1) if args.pin else (None, None)
    return args


def check_tools(args) -> None:
    missing = [t for t in ("h2load",) if shutil.which(t) is None]
    if missing:
        sys.exit("Missing load tool(s): " + ", ".join(missing) + "\nInstall with:\n  "
                 + "\n  ".join(INSTALL_HINT[t] for t in missing))
    if args.wrk and shutil.which("wrk") is None:
        log(f"wrk not found: skipping the throughput cross-check. Install with: {INSTALL_HINT['wrk']}")
        args.wrk = False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools(args)
    command = "python bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else
                                        " " + shlex.join(argv if argv is not None else sys.argv[1:]))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    # A fresh database every run: an audit table left by earlier runs would make the figures depend on
    # how often the benchmark ran before.
    shutil.rmtree(out / "data", ignore_errors=True)
    if args.pin:  # this process, h2load, wrk and the fake FHIR server share the load CPU
        os.sched_setaffinity(0, {args.load_cpu})
    started = time.monotonic()
    if args.baseline:
        args.trees["baseline"] = export_baseline(args.baseline, out)
    bodies = gen.write_requests(out, tuple(args.sizes), shapes=tuple(args.shapes))
    results: dict = {"engine": engine_state(), "machine": machine_info(), "command": command,
                     "load_start": os.getloadavg()}
    log(f"CDS service benchmark: {results['machine']['nproc']} CPUs, {results['machine']['cpu']}, "
        f"Python {results['machine']['python']}; engine: {results['engine']}")

    services: dict[str, Server] = {}
    for name in args.service_names:
        port = free_port()
        tree = args.trees.get(name)
        env = tree_env(service_env(port, out, CDS_DATA_DIR=str(out / f"data-{name}")), tree)
        services[name] = Server(name, service_argv(port, tree), port, env, args.server_cpu, out, cwd=tree or ROOT)
    bare_port, fake_port = free_port(), free_port()
    bare = Server("bare", uvicorn_argv("bench.bare_app:app", bare_port), bare_port, service_env(bare_port, out),
                  args.server_cpu, out)
    fake_env = service_env(fake_port, out, BENCH_FHIR_DELAY_MS=str(args.fhir_delay_ms),
                           BENCH_JWKS_FILE=str(out / "jwks.json"))
    fake = Server("fake-fhir", uvicorn_argv("bench.fake_fhir:app", fake_port), fake_port, fake_env, args.load_cpu,
                  out)
    svc = services["service"]
    try:
        for s in (*services.values(), bare, fake):
            s.start()
        cards = {}
        for name, path in bodies.items():
            status, answer = post(svc.url + SERVICE_PATH, path.read_bytes())
            if status != 200:
                raise RuntimeError(f"the service answered {status} to {name}: {answer[:500]!r}")
            cards[name] = len(orjson.loads(answer).get("cards", []))
        results["cards"] = ", ".join(f"{n}: {c}" for n, c in cards.items())
        results["prefetch"] = {}
        if "prefetch" in args.scenarios:
            log("Scenario 1: prefetched order-select, services vs bare (in turn)")
            results["prefetch"] = scenario_prefetch(args, services, bare, bodies, out)
        if "fallback" in args.scenarios:
            log(f"Scenario 3: FHIR fallback, fake server delay {args.fhir_delay_ms:g} ms")
            results["fallback"] = scenario_fallback(args, svc, fake, out)
        if "jwt" in args.scenarios:
            log("Scenario 4: JWT verification on")
            body = bodies.get(gen.body_name(100)) or next(iter(bodies.values()))
            results["jwt"] = scenario_jwt(args, services, bare, fake, out, body)
    finally:
        for s in (*services.values(), bare, fake):
            s.stop()
    if "stages" in args.scenarios:
        log("Scenario 2: per-stage timing (in-process)")
        results["stages"] = scenario_stages(args, out)
    if "decode" in args.scenarios:
        log("Scenario 6: decoding the body")
        results["decode"] = scenario_decode(args, out)
    if "cold" in args.scenarios:
        log("Scenario 5: cold start")
        small = bodies.get(gen.body_name(10)) or next(iter(bodies.values()))
        results["cold_start"] = cold_start(args, out, small.read_bytes())

    results["load_end"] = os.getloadavg()
    text = render(results, args, results["machine"], command)
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    args.results.write_text(text)
    log("\n" + text)
    log(f"Wrote {args.results} ({time.monotonic() - started:.0f} s)")
    failed = [c for c, *_rest, ok in budget(results, args) if ok is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
