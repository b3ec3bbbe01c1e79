#!/usr/bin/env python3
"""Load the FHIR fixtures into a FHIR server (the HAPI container of docker-compose.yml), and build hook requests.

    python scripts/load_fixtures.py --server http://localhost:8080/fhir fixtures/fhir
    python scripts/load_fixtures.py --request fixtures/fhir/02-s1-conduction-block-ivig.json \\
        --fhir-server http://hapi:8080/fhir > request.json

Each fixture is a ``collection`` Bundle; a FHIR server only accepts ``transaction`` (or ``batch``) Bundles
at its base URL, so every entry becomes a ``PUT Type/id`` (idempotent: loading twice changes nothing;
the ids the fixtures reference stay the same). Entries without an id are ``POST``-ed under their
``urn:uuid`` fullUrl so references to them still resolve. Loading uses only the standard library, so it
runs in any Python 3.11 (the compose loader uses the service image). ``--request`` needs the
``cds_service`` package: it prints the CDS Hooks request an EHR would send for the fixture, without
prefetch, so the service fetches everything from the FHIR server.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

FHIR_JSON = "application/fhir+json"


def to_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """A transaction Bundle that creates or replaces every resource of ``bundle`` under its own id."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("not a FHIR Bundle")
    if bundle.get("type") in ("transaction", "batch"):
        return copy.deepcopy(bundle)
    entries = []
    for i, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise ValueError(f"entry[{i}] has no resource")
        resource = copy.deepcopy(resource)
        rtype, rid = resource["resourceType"], resource.get("id")
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        out: dict[str, Any] = {"resource": resource}
        if rid:
            out["request"] = {"method": "PUT", "url": f"{rtype}/{rid}"}
            if full_url and full_url.startswith("urn:"):
                out["fullUrl"] = full_url  # other entries may reference it by this name
        else:
            out["fullUrl"] = full_url if full_url and full_url.startswith("urn:") else f"urn:uuid:{uuid.uuid4()}"
            out["request"] = {"method": "POST", "url": rtype}
        entries.append(out)
    if not entries:
        raise ValueError("the Bundle has no entries")
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _request(url: str, data: bytes | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL given by the operator
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_server(base: str, timeout: float) -> None:
    """HAPI takes a minute or two to start; poll its CapabilityStatement until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = _request(base.rstrip("/") + "/metadata", timeout=10)
            if status == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise SystemExit(f"FHIR server at {base} did not answer within {timeout:.0f} s")
        time.sleep(3)


def load(base: str, paths: list[Path]) -> int:
    failures = 0
    for path in paths:
        try:
            bundle = to_transaction(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, json.JSONDecodeError) as exc:
            print(f"SKIP {path.name}: {exc}", file=sys.stderr)
            failures += 1
            continue
        status, body = _request(base.rstrip("/"), json.dumps(bundle).encode("utf-8"))
        if status // 100 == 2:
            print(f"ok   {path.name}: {len(bundle['entry'])} resources")
        else:
            failures += 1
            print(f"FAIL {path.name}: HTTP {status}: {_diagnostics(body)}", file=sys.stderr)
    return failures


def _diagnostics(body: bytes) -> str:
    try:
        data = json.loads(body)
        return "; ".join(i.get("diagnostics", "") for i in data.get("issue", []))[:500]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def fixture_paths(targets: list[str]) -> list[Path]:
    out: list[Path] = []
    for target in targets:
        p = Path(target)
        out.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    return out


def hook_request(path: Path, fhir_server: str) -> dict[str, Any]:
    """The CDS Hooks request for a fixture, prefetch removed: the service must read the FHIR server."""
    from cds_service.evaluate import build_request

    expected = path.parent.parent / "expected" / (path.stem + ".yaml")
    hook, order = "order-select", None
    if expected.exists():
        import yaml

        spec = yaml.safe_load(expected.read_text(encoding="utf-8")) or {}
        hook, order = spec.get("hook", hook), spec.get("order")
    request = build_request(json.loads(path.read_text(encoding="utf-8")), hook, order)
    request.pop("prefetch", None)
    request["fhirServer"] = fhir_server
    return request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["fixtures/fhir"], help="fixture files or folders")
    parser.add_argument("--server", default="http://localhost:8080/fhir", help="FHIR base URL to load into")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the server to come up")
    parser.add_argument("--request", metavar="FIXTURE", help="print the hook request for one fixture and exit")
    parser.add_argument("--fhir-server", default="http://hapi:8080/fhir",
                        help="fhirServer to put in the --request output (as the CDS service reaches it)")
    args = parser.parse_args(argv)
    if args.request:
        json.dump(hook_request(Path(args.request), args.fhir_server), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.wait:
        wait_for_server(args.server, args.wait)
    paths = fixture_paths(args.paths)
    if not paths:
        print("no fixtures found", file=sys.stderr)
        return 1
    failures = load(args.server, paths)
    print(f"{len(paths) - failures}/{len(paths)} fixtures loaded into {args.server}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
