"""Large hook calls (cds_service.workload): a bounded number of draft orders, and the heavy steps of a large call
run in the worker thread with the same answer as on the event loop. The timing side (other calls keep
answering meanwhile) is in tests/faults/test_faults.py."""

from __future__ import annotations

import copy

import orjson
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.workload import Workload, WorkloadPolicy
from tests.faults.harness import REQUEST, with_orders

SELECT = "/cds-services/neurosarcoidosis-order-select"


def client(tmp_path, **settings) -> TestClient:
    values = dict(data_dir=tmp_path, trusted_issuers={}, redis_url=None, database_url=None)
    return TestClient(create_app(Settings(**{**values, **settings})))


def post(c: TestClient, body: dict):
    return c.post(SELECT, content=orjson.dumps(body), headers={"Content-Type": "application/json"})


def rules(resp) -> list[tuple[str, str]]:
    return sorted((c["extension"]["org.neurosarcoidosis-cds.rule-id"], c["summary"]) for c in resp.json()["cards"])


def test_more_draft_orders_than_the_limit_is_a_413_naming_the_setting(tmp_path):
    with client(tmp_path, max_draft_orders=5) as c:
        assert post(c, with_orders(5)).status_code == 200
        resp = post(c, with_orders(6))
        assert resp.status_code == 413
        outcome = resp.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "too-costly"
        assert "6 orders" in outcome["issue"][0]["diagnostics"]
        assert "CDS_MAX_DRAFT_ORDERS" in outcome["issue"][0]["diagnostics"]
        assert c.get("/health").status_code == 200


def test_the_default_limit_refuses_the_five_thousand_order_request(tmp_path):
    slim = copy.deepcopy(REQUEST)
    order = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/pt-19"},
             "medicationCodeableConcept": {"text": "Immune globulin (human) IV"}}
    slim["context"]["draftOrders"]["entry"] = [{"resource": dict(order, id=f"o{i}")} for i in range(5000)]
    with client(tmp_path) as c:
        assert Settings(data_dir=tmp_path).max_draft_orders == 1000
        resp = post(c, slim)
        assert resp.status_code == 413, resp.text
        assert "at most 1000" in resp.json()["issue"][0]["diagnostics"]


def test_a_large_call_is_worked_in_the_worker_with_the_same_answer_as_on_the_loop(tmp_path):
    body = with_orders(60)  # above the worker's threshold of draft orders, and a body over its size threshold
    body["padding"] = "x" * 600_000
    with client(tmp_path) as c:
        workload: Workload = c.app.state.workload
        in_worker = post(c, body)
        assert in_worker.status_code == 200
        assert workload.offloaded == 2  # parsing the body, then the rules and the encoding of the answer
        c.app.state.workload = Workload(WorkloadPolicy(large_body_bytes=10**12, large_orders=10**9,
                                                       large_resources=10**9))
        on_loop = post(c, body)
        assert c.app.state.workload.offloaded == 0
    assert rules(in_worker) == rules(on_loop)
    assert any(rule.startswith("ivig.") for rule, _ in rules(in_worker))


def test_a_usual_call_never_leaves_the_event_loop(tmp_path):
    with client(tmp_path) as c:
        assert post(c, REQUEST).status_code == 200
        assert c.app.state.workload.offloaded == 0


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_the_limit_must_be_a_positive_number(tmp_path, monkeypatch, value):
    from pydantic import ValidationError

    monkeypatch.setenv("CDS_MAX_DRAFT_ORDERS", value)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path)


def test_large_steps_beyond_the_waiting_bound_are_refused_503_not_queued():
    import asyncio
    import threading

    from cds_service.errors import ServiceError

    release = threading.Event()
    workload = Workload(WorkloadPolicy(max_waiting=2))

    async def scenario():
        busy = [asyncio.ensure_future(workload.run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0.05)
        try:
            await workload.run(lambda: "third")
        except ServiceError as exc:
            refused = exc
        release.set()
        await asyncio.gather(*busy)
        return refused, await workload.run(lambda: "after")

    refused, after = asyncio.run(scenario())
    workload.close()
    assert refused.status == 503 and refused.headers["Retry-After"] and after == "after"
