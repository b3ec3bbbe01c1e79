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

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], cpu: int | None, logdir: Path):
        self.name, self.argv, self.port, self.env, self.cpu = name, argv, port, env, cpu
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        logf = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
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
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def service_env(port: int, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_HOST="127.0.0.1", CDS_PORT=str(port), CDS_DATA_DIR=str(out / "data"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def service_argv(port: int) -> list[str]:
    exe = Path(sys.executable).parent / "cds-service"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "cds_service"]
    return [*head, "serve", "--host", "127.0.0.1", "--port", str(port)]


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
def scenario_prefetch(args, svc: Server, bare: Server, bodies: dict[int, Path], out: Path) -> dict:
    rows: dict[str, dict] = {}
    for n in args.sizes:
        body = bodies[n]
        warm = 60 if n >= 1000 else 400
        for server in (svc, bare):
            h2load_count(server.url + SERVICE_PATH, body, 4, warm)
        for conc in args.concurrency:
            key = f"{n}/{conc}"
            runs: dict[str, list[RunResult]] = {"service": [], "bare": []}
            for rep in range(args.reps):  # A B A B: the machine's drift hits both alike
                for name, server in (("service", svc), ("bare", bare)):
                    r = h2load(server.url + SERVICE_PATH, body, conc, args.duration,
                               out / f"h2-{name}-{n}-{conc}-{rep}.log")
                    runs[name].append(r)
                    log(f"  {n:>5} res  c={conc}  {name:<7} rep {rep + 1}: {r.rps:8,.0f} req/s  "
                        f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}")
            rows[key] = {"n": n, "conc": conc, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
                         **summarise(runs["service"], runs["bare"])}
        if args.wrk and (not args.quick or n == 100):
            wconc = max(args.concurrency)
            w = {}
            for name, server in (("service", svc), ("bare", bare)):
                w[name] = wrk(server.url + SERVICE_PATH, body, wconc, args.wrk_duration, out)
                log(f"  {n:>5} res  c={wconc}  {name:<7} wrk:   {w[name].rps:8,.0f} req/s  errors {w[name].errors}")
            rows[f"{n}/{wconc}"]["wrk"] = {k: asdict(v) for k, v in w.items()}
    return rows


def summarise(svc: list[RunResult], bare: list[RunResult]) -> dict:
    """Medians over repetitions; ratios paired within each repetition (same moment, same machine state)."""
    return {
        "svc_rps": median([r.rps for r in svc]), "bare_rps": median([r.rps for r in bare]),
        "rps_ratio": median([s.rps / b.rps for s, b in zip(svc, bare, strict=True) if b.rps]),
        "svc_p50": median([r.p50_ms for r in svc]), "bare_p50": median([r.p50_ms for r in bare]),
        "svc_p99": median([r.p99_ms for r in svc]), "bare_p99": median([r.p99_ms for r in bare]),
        "p99_ratio": median([s.p99_ms / b.p99_ms for s, b in zip(svc, bare, strict=True) if b.p99_ms]),
        "svc_tail": median([r.p99_ms / r.p50_ms for r in svc if r.p50_ms]),
        "svc_errors": sum(r.errors for r in svc), "bare_errors": sum(r.errors for r in bare),
        "svc_requests": sum(r.requests for r in svc),
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


def scenario_jwt(args, svc: Server, bare: Server, fake: Server, out: Path, body: Path) -> dict:
    from bench import loaddrv

    if not auth_available():
        log("  skipped: cds_service.auth has not landed (no module with install()); re-run once it exists")
        return {"skipped": "cds_service.auth is not installed yet (no module with install())"}
    minter = Minter()
    (out / "jwks.json").write_bytes(orjson.dumps(minter.jwks))
    port = free_port()
    issuers = {ISSUER: {"jwks_url": f"{fake.url}/jwks.json"}}
    env = service_env(port, out, CDS_TRUSTED_ISSUERS=json.dumps(issuers),
                      CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    secured = Server("service-auth", service_argv(port), port, env, args.server_cpu, out).start()
    try:
        url = secured.url + SERVICE_PATH
        payload = body.read_bytes()
        probe, probe_stats = loaddrv.run(url, payload, minter.tokens("ES384", url, 1), 1)
        refused, _ = loaddrv.run(url, payload, [None], 1)
        if probe.errors:
            status = probe_stats.sample_status
            log(f"  JWT probe failed: HTTP {status} {probe_stats.sample_body[:300]!r}; see {secured.log_path}")
            return {"error": f"a valid ES384 token was answered with HTTP {status}", "log": str(secured.log_path),
                    "sample": probe_stats.sample_body.decode(errors="replace")[:1000]}
        variants = [("service+JWT ES384", url, "ES384"), ("service+JWT RS384", url, "RS384"),
                    ("service, auth off", svc.url + SERVICE_PATH, None), ("bare", bare.url + SERVICE_PATH, None)]
        for _name, u, alg in variants:  # warm-up
            loaddrv.run(u, payload, minter.tokens(alg, u, 100) if alg else [None] * 100, 4)
        result: dict = {"requests_per_run": args.jwt_requests, "unauthenticated_status":
                        next(iter(refused.extra["statuses"]), None), "runs": {}}
        for conc in args.concurrency:
            runs: dict[str, list[RunResult]] = {name: [] for name, *_ in variants}
            for _rep in range(args.reps):
                for name, u, alg in variants:
                    tokens = minter.tokens(alg, u, args.jwt_requests) if alg else [None] * args.jwt_requests
                    r, _stats = loaddrv.run(u, payload, tokens, conc)
                    runs[name].append(r)
                    log(f"  JWT c={conc} {name:<18}: {r.rps:8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                        f"p99 {r.p99_ms:6.2f} ms  errors {r.errors}")
            result["runs"][conc] = {
                name: {"rps": median([r.rps for r in rs]), "p50": median([r.p50_ms for r in rs]),
                       "p99": median([r.p99_ms for r in rs]), "errors": sum(r.errors for r in rs),
                       "vs_bare": median([r.rps / b.rps for r, b in zip(rs, runs["bare"], strict=True)])}
                for name, rs in runs.items()}
        return result
    finally:
        secured.stop()


# --------------------------------------------------------------------------- scenario 4
def cold_start(args, out: Path, body: bytes) -> dict:
    """exec -> first 200 of a real hook call (10 resources), and the second call's time."""
    result = {}
    for name in ("service", "bare"):
        firsts, seconds = [], []
        for i in range(args.cold_reps):
            port = free_port()
            argv = service_argv(port) if name == "service" else uvicorn_argv("bench.bare_app:app", port)
            env = service_env(port, out)
            logf = (out / f"cold-{name}-{i}.log").open("wb")
            started = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    preexec_fn=_pinner(args.server_cpu), start_new_session=True)
            try:
                first = None
                while time.perf_counter() - started < 30 and proc.poll() is None:
                    try:
                        status, _ = post(f"http://127.0.0.1:{port}{SERVICE_PATH}", body)
                    except OSError:
                        time.sleep(0.003)
                        continue
                    if status == 200:
                        first = time.perf_counter() - started
                    break
                t = time.perf_counter()
                post(f"http://127.0.0.1:{port}{SERVICE_PATH}", body)
                second = time.perf_counter() - t
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if first is None:
                raise RuntimeError(f"cold start of {name} failed; see {out / f'cold-{name}-{i}.log'}")
            firsts.append(first * 1000)
            seconds.append(second * 1000)
        result[name] = {"first_ms": median(firsts), "min_ms": min(firsts), "max_ms": max(firsts),
                        "second_ms": median(seconds), "runs_ms": firsts}
        log(f"  cold start {name}: exec -> first 200 median {median(firsts):.0f} ms "
            f"({min(firsts):.0f}..{max(firsts):.0f}); 2nd request {median(seconds):.1f} ms")
    return result


# --------------------------------------------------------------------------- report
def engine_state() -> str:
    engine = ROOT / "cds_service" / "engine.py"
    text = engine.read_text() if engine.exists() else ""
    if "PLACEHOLDER" in text or not (ROOT / "cds_service" / "rules.py").exists():
        return "placeholder (the clinical engine had not landed: no rules ran, no cards)"
    return "real clinical engine (cds_service/clinical/rules.py present)"


def budget(results: dict, args) -> list[tuple[str, str, str, bool | None]]:
    out = []
    key = f"100/{max(args.concurrency)}"
    row = results["prefetch"].get(key)
    if row:
        out += [
            ("throughput at 100 resources, c=8, vs bare", ">= 0.25x", f"{row['rps_ratio']:.2f}x",
             row["rps_ratio"] >= 0.25),
            ("p99 at 100 resources, c=8, vs bare p99", "<= 4x", f"{row['p99_ratio']:.2f}x", row["p99_ratio"] <= 4),
            ("service p99/p50 at 100 resources, c=8", "<= 3", f"{row['svc_tail']:.2f}", row["svc_tail"] <= 3),
        ]
    errors = sum(r["svc_errors"] for r in results["prefetch"].values())
    requests = sum(r["svc_requests"] for r in results["prefetch"].values())
    out.append(("service errors (all prefetch runs)", "0", f"{errors} of {requests:,}", errors == 0))
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
        out.append(("cold start, exec -> first hook answer (median)", "< 1500 ms", f"{first:.0f} ms", first < 1500))
    return out


def render(results: dict, args, machine: dict, command: str) -> str:
    lines = ["# Benchmark results", "",
             f"Produced by `{command}` on {machine['date']}.", "",
             f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['os']}, Python {machine['python']}. "
             f"Server pinned to CPU {args.server_cpu}, load tools to CPU {args.load_cpu}"
             if args.pin else f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}; "
             "no CPU pinning.",
             "", "Load average (1/5/15 min) at the start: " + "/".join(f"{x:.2f}" for x in results["load_start"])
             + ", at the end: " + "/".join(f"{x:.2f}" for x in results.get("load_end", ()))
             + " (this run's own processes included; other work on the machine moves the figures).", "",
             f"Clinical engine: {results['engine']}.", "",
             f"Cards answered per request (sample before the runs): {results['cards']}.", "",
             "Method: service (`cds-service serve`: uvicorn, uvloop + httptools, 1 worker, gc.freeze in the lifespan, "
             "JSON logs on, written to a file) and bare floor (`bench/bare_app.py`, Starlette + orjson, same server "
             f"settings) driven alternately A B A B by `h2load --h1`, {args.duration:g} s per run, {args.reps} "
             "repetition(s); medians over repetitions, ratios paired within a repetition. p50/p99 come from "
             "h2load's per-request log. wrk is a throughput cross-check only.", "",
             "## Budget", ""]
    lines.append(markdown_table(["check", "target", "measured", "verdict"],
                                [(a, b, c, verdict(d)) for a, b, c, d in budget(results, args)], "llrl"))
    lines += ["## 1. Prefetched order-select (IVIG draft order)", ""]
    rows = []
    for r in results["prefetch"].values():
        w = r.get("wrk")
        rows.append((str(r["n"]), str(r["conc"]), r["svc_rps"], r["bare_rps"], f"{r['rps_ratio']:.2f}x",
                     r["svc_p50"], r["bare_p50"], r["svc_p99"], r["bare_p99"], f"{r['p99_ratio']:.2f}x",
                     f"{r['svc_tail']:.2f}", f"{r['svc_errors']}/{r['bare_errors']}",
                     f"{fmt(w['service']['rps'])} / {fmt(w['bare']['rps'])}" if w else "–"))
    lines.append(markdown_table(
        ["resources", "conc", "service req/s", "bare req/s", "req/s ratio", "service p50 ms", "bare p50 ms",
         "service p99 ms", "bare p99 ms", "p99 ratio", "service p99/p50", "errors svc/bare", "wrk req/s svc / bare"],
        rows))
    sizes = {n: (ROOT / "bench" / "out" / f"req-{n}.json") for n in args.sizes}
    lines += ["Request bodies: " + ", ".join(f"{n} resources = {p.stat().st_size / 1024:,.0f} KB"
                                               for n, p in sizes.items() if p.exists()) + ".", ""]
    fb = results.get("fallback")
    lines += ["## 2. FHIR fallback (fhirServer, no prefetch)", ""]
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
    lines += ["## 3. JWT verification on", ""]
    jw = results.get("jwt") or {}
    if "runs" in jw:
        lines += [f"Driver: `bench/loaddrv.py` (asyncio HTTP/1.1 keep-alive, one pre-minted token with a unique "
                  f"`jti` per request, `aud` = the exact URL called), {jw['requests_per_run']:,} requests per run; "
                  "the same driver on the service without auth and on the bare floor for comparison. A request "
                  f"without a token was answered HTTP {jw['unauthenticated_status']}.", ""]
        jrows = []
        for conc, variants in jw["runs"].items():
            for name, v in variants.items():
                jrows.append((str(conc), name, v["rps"], f"{v['vs_bare']:.2f}x", v["p50"], v["p99"], str(v["errors"])))
        lines.append(markdown_table(["conc", "variant", "req/s", "vs bare", "p50 ms", "p99 ms", "errors"], jrows,
                                    "llrrrrr"))
    else:
        lines += [f"Not measured: {jw.get('skipped') or jw.get('error') or 'not run'}.", ""]
    cs = results.get("cold_start")
    lines += ["## 4. Cold start", ""]
    if cs:
        lines += [f"exec of `cds-service serve` to the first 200 on a 10-resource hook call, {args.cold_reps} "
                  "starts; `bench/bare_app.py` under uvicorn for reference.", ""]
        lines.append(markdown_table(["app", "exec -> first 200, median ms", "min..max ms", "2nd request ms"],
                                    [(k, v["first_ms"], f"{v['min_ms']:.0f}..{v['max_ms']:.0f}", v["second_ms"])
                                     for k, v in cs.items()]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark the CDS service against a bare floor.")
    p.add_argument("--quick", action="store_true", help="~1 minute: 2 s runs, one repetition, fewer cross-checks")
    p.add_argument("--sizes", default="10,100,1000", help="prefetched resources per request")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--duration", type=float, help="seconds per h2load run (default 3, quick 2)")
    p.add_argument("--reps", type=int, help="A B repetitions per cell (default 4, quick 1)")
    p.add_argument("--scenarios", default="prefetch,fallback,jwt,cold",
                   help="comma list of prefetch, fallback, jwt, cold")
    p.add_argument("--fhir-delay-ms", type=float, default=50.0)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and load tool to CPUs")
    p.add_argument("--no-wrk", dest="wrk", action="store_false", help="skip the wrk throughput cross-check")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.scenarios = set(args.scenarios.split(","))
    # Short runs, more of them: this VM's CPU speed swings by a third from one half-second to the next
    # (a pinned busy loop shows it), so many closely paired A B runs give steadier ratios than a few long.
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.reps = args.reps or (1 if args.quick else 4)
    args.wrk_duration = 2.0 if args.quick else 3.0
    args.fallback_duration = 2.0 if args.quick else 4.0
    args.jwt_requests = 600 if args.quick else 2000
    args.cold_reps = 3 if args.quick else 5
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
    bodies = {n: p for n, p in ((n, out / f"req-{n}.json") for n in args.sizes)}
    gen.write_requests(out, tuple(args.sizes))
    results: dict = {"engine": engine_state(), "machine": machine_info(), "command": command,
                     "load_start": os.getloadavg()}
    log(f"CDS service benchmark: {results['machine']['nproc']} CPUs, {results['machine']['cpu']}, "
        f"Python {results['machine']['python']}; engine: {results['engine']}")

    svc_port, bare_port, fake_port = free_port(), free_port(), free_port()
    svc = Server("service", service_argv(svc_port), svc_port, service_env(svc_port, out), args.server_cpu, out)
    bare = Server("bare", uvicorn_argv("bench.bare_app:app", bare_port), bare_port, service_env(bare_port, out),
                  args.server_cpu, out)
    fake_env = service_env(fake_port, out, BENCH_FHIR_DELAY_MS=str(args.fhir_delay_ms),
                           BENCH_JWKS_FILE=str(out / "jwks.json"))
    fake = Server("fake-fhir", uvicorn_argv("bench.fake_fhir:app", fake_port), fake_port, fake_env, args.load_cpu,
                  out)
    try:
        for s in (svc, bare, fake):
            s.start()
        cards = {}
        for n in args.sizes:
            status, answer = post(svc.url + SERVICE_PATH, bodies[n].read_bytes())
            if status != 200:
                raise RuntimeError(f"the service answered {status} to the {n}-resource request: {answer[:500]!r}")
            cards[n] = len(orjson.loads(answer).get("cards", []))
        results["cards"] = ", ".join(f"{n} resources: {c}" for n, c in cards.items())
        results["prefetch"] = {}
        if "prefetch" in args.scenarios:
            log("Scenario 1: prefetched order-select, service vs bare (A B A B)")
            results["prefetch"] = scenario_prefetch(args, svc, bare, bodies, out)
        if "fallback" in args.scenarios:
            log(f"Scenario 2: FHIR fallback, fake server delay {args.fhir_delay_ms:g} ms")
            results["fallback"] = scenario_fallback(args, svc, fake, out)
        if "jwt" in args.scenarios:
            log("Scenario 3: JWT verification on")
            body = bodies.get(100) or next(iter(bodies.values()))
            results["jwt"] = scenario_jwt(args, svc, bare, fake, out, body)
    finally:
        for s in (svc, bare, fake):
            s.stop()
    if "cold" in args.scenarios:
        log("Scenario 4: cold start")
        small = bodies.get(10) or next(iter(bodies.values()))
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
