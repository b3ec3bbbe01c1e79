"""The fast shape check never accepts what fhir.resources refuses, and accepts the well-formed data we have.

``facts.shapes.plainly_valid`` lets a projection skip the full ``fhir.resources`` validation. That is only
safe in one direction: everything it accepts must be valid for ``fhir.resources`` too. Checked on every
resource of the fixtures, the Synthea records and the captured client requests, and on mutations of them
(every element deleted, given an unknown key, or replaced by values of the wrong type or spelling).
"""

from __future__ import annotations

import copy
import glob
import json
import random
from pathlib import Path

import pytest

from cds_service.clinical.facts.shapes import plainly_valid
from cds_service.clinical.facts.validation import _MEDICATION_X, _PROJECTION, _STUBS, fhir_resources_problem

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("fixtures/fhir/*.json", "tests/data/synthea-r4/*.json", "tests/data/client-examples/*.json")


def project(res: dict) -> dict:
    """The projection as the facts builder makes it: resourceType, id, the fields read, required stubs."""
    rtype = res["resourceType"]
    proj = {"resourceType": rtype}
    if isinstance(res.get("id"), str):
        proj["id"] = res["id"]
    for k in _PROJECTION[rtype]:
        if k in res:
            proj[k] = res[k]
    for k, v in _STUBS.get(rtype, {}).items():
        if k == "effectiveDateTime" and ("effectivePeriod" in proj or "effectiveDateTime" in proj):
            continue
        proj.setdefault(k, v)
    if rtype in _MEDICATION_X and "medicationCodeableConcept" not in proj:
        proj["medicationCodeableConcept"] = {"text": "?"}
    return proj


def _resources() -> list[dict]:
    found = []
    for pattern in SOURCES:
        for path in sorted(glob.glob(str(ROOT / pattern))):
            stack = [json.loads(Path(path).read_text())]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    if node.get("resourceType") in _PROJECTION:
                        found.append(node)
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
    return found


RESOURCES = _resources()


def _fhir_valid(proj: dict) -> bool:
    return fhir_resources_problem(proj["resourceType"], proj) is None


def test_real_resources_fast_accepted_are_valid_and_most_valid_ones_are_fast_accepted():
    assert len(RESOURCES) > 500
    fast = valid = both = 0
    for res in RESOURCES:
        proj = project(res)
        f, v = plainly_valid(proj["resourceType"], proj), _fhir_valid(proj)
        assert not (f and not v), proj  # never accept what fhir.resources refuses
        fast, valid, both = fast + f, valid + v, both + (f and v)
    assert both >= 0.98 * valid  # and it pays: nearly every valid resource takes the fast way


WRONG = [None, "", " ", "x  y", 0, -1, 1.5, True, [], {}, "2021-02-30", "2021-02-29", "2021-13-01", "2021-04-31",
         "2021-03-04T10:00:00", "2021-03-04T10:00Z", "2021", "http://x", {"foo": 1}, [{"foo": 1}], [None], [""],
         {"text": "x"}, [{"text": "x"}], 10**20, "\u00a0x", "<", "a" * 65]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _mutations(proj: dict):
    for path in _paths(proj):
        if path == ("resourceType",):
            continue
        for value in [*WRONG, "DELETE", "UNKNOWN"]:
            m = copy.deepcopy(proj)
            parent = m
            for step in path[:-1]:
                parent = parent[step]
            if value == "DELETE":
                del parent[path[-1]]
            elif value == "UNKNOWN":
                if not isinstance(parent[path[-1]], dict):
                    continue
                parent[path[-1]]["foo"] = "bar"
            else:
                parent[path[-1]] = copy.deepcopy(value)
            yield m


@pytest.mark.parametrize("rtype", sorted(_PROJECTION))
def test_mutated_resources_fast_accepted_are_valid(rtype):
    candidates = [r for r in RESOURCES if r["resourceType"] == rtype]
    if not candidates:
        pytest.skip(f"no {rtype} in the test data")
    for res in random.Random(16).sample(candidates, min(2, len(candidates))):
        for m in _mutations(project(res)):
            if plainly_valid(rtype, m):
                assert _fhir_valid(m), m
