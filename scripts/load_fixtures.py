#!/usr/bin/env python3
"""Load the FHIR fixtures into a FHIR server (the HAPI container of docker-compose.yml), and build hook requests.

    python scripts/load_fixtures.py --server http://localhost:8080/fhir fixtures/fhir
    python scripts/load_fixtures.py --request fixtures/fhir/02-s1-conduction-block-ivig.json \\
        --fhir-server http://hapi:8080/fhir > request.json

Fixtures reuse resource ids (``Condition/ns-1`` is in most of them), so every resource id is made unique
per fixture before loading (``19-ivig-renal-egfr-48.json``: ``ns-1`` becomes ``f19-ns-1``) and every
reference to it is rewritten; loading all fixtures then keeps every patient's data intact. Each fixture
is a ``collection`` Bundle; a FHIR server only accepts ``transaction`` (or ``batch``) Bundles at its base
URL, so every entry becomes a ``PUT Type/id`` (idempotent: loading twice changes nothing). Entries without
an id are ``POST``-ed under their ``urn:uuid`` fullUrl so references to them still resolve. Loading uses
only the standard library, so it runs in any Python 3.11 (the compose loader uses the service image).
``--request`` needs the ``cds_service`` package: it prints the CDS Hooks request an EHR would send for the
fixture, with the same loaded ids and without prefetch, so the service fetches everything from the FHIR
server.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

FHIR_JSON = "application/fhir+json"
MAX_ID = 64  # FHIR id: [A-Za-z0-9\-\.]{1,64}


def fixture_prefix(path: Path) -> str:
    """``f19`` for ``19-ivig-renal-egfr-48.json``; ``f`` and a short hash of the name when it has no number."""
    match = re.match(r"(\d+)", path.stem)
    return f"f{match.group(1)}" if match else "f" + hashlib.sha1(path.stem.encode()).hexdigest()[:8]


def _loaded_id(prefix: str, rid: str) -> str:
    candidate = f"{prefix}-{rid}"
    if len(candidate) <= MAX_ID:
        return candidate
    return f"{prefix}-{hashlib.sha1(rid.encode()).hexdigest()[:32]}"


def id_map(bundle: dict[str, Any], prefix: str) -> dict[str, str]:
    """``{"Condition/ns-1": "Condition/f19-ns-1", ...}`` for every resource of the bundle that has an id."""
    out = {}
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and isinstance(res.get("id"), str) and isinstance(res.get("resourceType"), str):
            out[f"{res['resourceType']}/{res['id']}"] = f"{res['resourceType']}/{_loaded_id(prefix, res['id'])}"
    return out


def _rewrite(node: Any, refs: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = _new_reference(value, refs)
            else:
                out[key] = _rewrite(value, refs)
        return out
    if isinstance(node, list):
        return [_rewrite(v, refs) for v in node]
    return node


def _new_reference(value: str, refs: dict[str, str]) -> str:
    if value in refs:
        return refs[value]
    for old, new in refs.items():  # absolute references: http://server/fhir/Patient/x
        if value.endswith("/" + old):
            return value[: -len(old)] + new
    return value


def with_unique_ids(bundle: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of ``bundle`` whose resource ids carry ``prefix`` and whose references (and fullUrls) follow."""
    refs = id_map(bundle, prefix)
    out = _rewrite(bundle, refs)
    for entry in out.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and isinstance(res.get("id"), str):
            res["id"] = refs[f"{res['resourceType']}/{res['id']}"].split("/", 1)[1]
        full = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(full, str) and not full.startswith("urn:"):
            entry["fullUrl"] = _new_reference(full, refs)
    return out


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
            bundle = to_transaction(with_unique_ids(json.loads(path.read_text(encoding="utf-8")),
                                                    fixture_prefix(path)))
        except (ValueError, json.JSONDecodeError) as exc:
            print(f"SKIP {path.name}: {exc}", file=sys.stderr)
            failures += 1
            continue
        status, body = _request(base.rstrip("/"), json.dumps(bundle).encode("utf-8"))
        if status // 100 == 2:
            print(f"ok   {path.name}: {len(bundle['entry'])} resources (ids prefixed {fixture_prefix(path)}-)")
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
    """The CDS Hooks request for a fixture as loaded (ids prefixed), prefetch removed: the service must read
    the FHIR server."""
    from cds_service.evaluate import build_request

    expected = path.parent.parent / "expected" / (path.stem + ".yaml")
    hook, order = "order-select", None
    if expected.exists():
        import yaml

        spec = yaml.safe_load(expected.read_text(encoding="utf-8")) or {}
        hook, order = spec.get("hook", hook), spec.get("order")
    bundle = json.loads(path.read_text(encoding="utf-8"))
    prefix = fixture_prefix(path)
    if order:
        order = id_map(bundle, prefix).get(order, order)
    request = build_request(with_unique_ids(bundle, prefix), hook, order)
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
