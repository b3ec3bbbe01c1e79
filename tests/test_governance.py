"""Rule governance: site rule modes (on | shadow | off), rule versions, one audit row per hook call.

A rule in shadow mode never reaches a response but is audited (flagged) with its version; a rule ``off``
is not run; discovery and /metrics say the modes; a mistake in the rules file is one line at start.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid

import pytest
import sqlalchemy as sa
from conftest import FIXTURES, load_json
from fastapi.testclient import TestClient
from store_support import db_url  # noqa: F401 - fixture
from test_cli import FIXTURE, clean_env, cli

from cds_service.app import create_app
from cds_service.clinical.cards import card_library
from cds_service.clinical.rules import RULE_IDS
from cds_service.clinical.terminology import get_terminology
from cds_service.clinical.thresholds import Thresholds
from cds_service.config import Settings, get_settings
from cds_service.governance.modes import RuleModesError, load_rule_modes, parse_rule_modes
from cds_service.governance.versions import CRITERIA, ORDER_KINDS, changes, current_versions, rule_inputs
from cds_service.models import RULE_ID_EXTENSION
from cds_service.store import CallRow, open_store
from cds_service.store.schema import cards as cards_table
from cds_service.store.schema import hook_calls

SELECT = "/cds-services/neurosarcoidosis-order-select"
REQUEST = FIXTURES / "requests" / "ivig-order-select.json"
PATIENT = load_json(REQUEST)["context"]["patientId"]


# --------------------------------------------------------------------------- rule inputs (data)
def test_every_rule_says_what_it_reads_and_every_input_exists():
    inputs = rule_inputs()
    assert set(inputs) == set(RULE_IDS)
    library, fields = card_library(), set(Thresholds.model_fields)
    value_sets = set(get_terminology().value_sets())
    for rule, spec in inputs.items():
        assert rule in spec["cards"], f"{rule} does not list its own card text"
        assert set(spec["cards"]) <= set(library), rule
        assert set(spec["thresholds"]) <= fields, (rule, set(spec["thresholds"]) - fields)
        assert set(spec["value_sets"]) <= value_sets, (rule, set(spec["value_sets"]) - value_sets)
        assert spec["orders"] in ORDER_KINDS, rule
        assert set(spec["criteria"]) <= set(CRITERIA), rule
        # a threshold printed on the card ({t.name}) is one the rule reads
        printed = set(re.findall(r"\{t\.(\w+)", json.dumps(library[rule])))
        assert printed <= set(spec["thresholds"]), (rule, printed - set(spec["thresholds"]))


def test_a_threshold_changes_the_version_of_exactly_the_rules_that_read_it():
    before = current_versions(thresholds=Thresholds(_env_file=None, egfr_warning=60))
    after = current_versions(thresholds=Thresholds(_env_file=None, egfr_warning=45))
    changed = {r for r in before if before[r].version != after[r].version}
    assert changed == {r for r, spec in rule_inputs().items() if "egfr_warning" in spec["thresholds"]}
    assert "ivig.safety.renal" in changed and "ivig.safety.thrombosis" not in changed
    assert changes(before["ivig.safety.renal"].inputs, after["ivig.safety.renal"].inputs) == [
        "threshold egfr_warning 60 -> 45"]


# --------------------------------------------------------------------------- the rules file
def test_modes_file_understands_yaml_booleans_patterns_and_exact_ids(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("default: on\nrules:\n  ivig.indication.*: shadow\n  ivig.indication.sfn: off\n"
                 "  ladder.mtx-frequency: off\n  ivig.dose: 'on'\n", encoding="utf-8")
    modes = load_rule_modes(f)
    assert modes.mode("ivig.indication.steroid-resistant") == "shadow"
    assert modes.mode("ivig.indication.sfn") == "off"  # the exact id wins over the pattern
    assert modes.off == {"ivig.indication.sfn", "ladder.mtx-frequency"}
    assert modes.mode("ivig.safety.renal") == modes.mode("ivig.dose") == "on"
    assert parse_rule_modes({"default": "shadow"}).shadow == set(RULE_IDS)


@pytest.mark.parametrize(("text", "says"), [
    ("rules:\n  ivig.safety.kidney: shadow\n", "'ivig.safety.kidney' is not a rule of this service"),
    ("rules:\n  ivig.safety.renal: silent\n", "mode 'silent' is not one of on, shadow, off"),
    ("rules:\n  nothing.*: off\n", "pattern 'nothing.*' matches no rule"),
    ("rule:\n  ivig.safety.renal: off\n", "unknown key 'rule'"),
    ("rules: [ivig.safety.renal]\n", "'rules' must map rule ids"),
    ("rules:\n  a: [\n", "is not valid YAML at line"),
])
def test_a_mistake_in_the_rules_file_is_one_line(tmp_path, text, says):
    f = tmp_path / "rules.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(RuleModesError) as err:
        load_rule_modes(f)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_bad_rules_file_with_exit_2_and_one_line(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  ivig.safety.kidney: shadow\n", encoding="utf-8")
    result = cli("evaluate", str(FIXTURE), env=clean_env(tmp_path, CDS_RULES_FILE=str(f)), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Configuration error in CDS_RULES_FILE: expected a YAML file")
    assert "ivig.safety.kidney" in lines[0]
    missing = clean_env(tmp_path, CDS_RULES_FILE=str(tmp_path / "nope.yaml"))
    result = cli("evaluate", str(FIXTURE), env=missing, cwd=tmp_path)
    assert result.returncode == 2 and "cannot read" in result.stderr


# --------------------------------------------------------------------------- through the HTTP app
@pytest.fixture
def make_settings(tmp_path):
    def make(**modes: str) -> Settings:
        path = None
        if modes:
            path = tmp_path / "rules.yaml"
            path.write_text("rules:\n" + "".join(f"  {r}: '{m}'\n" for r, m in modes.items()), encoding="utf-8")
        return Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url=None, log_json=True, rules_file=path)

    return make


def _rows(settings, table):
    async def read():
        store = open_store(settings)
        try:
            async with store.engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(sa.select(table))]
        finally:
            await store.close()

    return asyncio.run(read())


def _rule_ids(resp) -> list[str]:
    return [c["extension"][RULE_ID_EXTENSION] for c in resp.json()["cards"]]


def test_shadow_cards_never_reach_the_response_but_are_audited_with_their_version(make_settings):
    settings = make_settings(**{"ivig.safety.renal": "shadow", "ivig.indication.steroid-resistant": "off"})
    with TestClient(create_app(settings)) as client:
        resp = client.post(SELECT, json=load_json(REQUEST))
        assert resp.status_code == 200
        shown = _rule_ids(resp)
        discovery = client.get("/cds-services").json()
        metrics = client.get("/metrics").text
    assert "ivig.safety.renal" not in shown and "ivig.indication.steroid-resistant" not in shown
    assert "ivig.dose" in shown and "stage.s3r-gc-refractory" in shown

    versions = current_versions()
    rows = _rows(settings, cards_table)
    by_rule = {r["rule_id"]: r for r in rows}
    assert by_rule["ivig.safety.renal"]["shadow"] is True
    assert by_rule["ivig.safety.renal"]["rule_version"] == versions["ivig.safety.renal"].version
    assert "ivig.indication.steroid-resistant" not in by_rule  # off: not evaluated, nothing to audit
    assert {r["rule_id"] for r in rows if not r["shadow"]} == set(shown)
    assert all(r["rule_version"] == versions[r["rule_id"]].version for r in rows)

    (call,) = _rows(settings, hook_calls)
    assert call["status"] == 200 and call["hook"] == "order-select" and call["ig_orders"] == 1
    assert call["shadow_cards"] == 1
    assert call["cards_critical"] + call["cards_warning"] + call["cards_info"] == len(shown)
    assert PATIENT not in json.dumps(call, default=str)

    ext = discovery["services"][0]["extension"]["org.neurosarcoidosis-cds.rule-modes"]
    assert ext["shadow"] == ["ivig.safety.renal"] and ext["off"] == ["ivig.indication.steroid-resistant"]
    assert "silent (shadow) mode at this site: ivig.safety.renal" in discovery["services"][0]["description"]
    assert 'cds_rule_mode{mode="shadow",rule="ivig.safety.renal"} 1.0' in metrics
    assert 'cds_rule_mode{mode="on",rule="ivig.safety.renal"} 0.0' in metrics
    assert re.search(r'cds_shadow_cards_total\{indicator="\w+",rule="ivig.safety.renal"\} [1-9]', metrics)


def test_a_rule_switched_off_in_the_site_file_is_never_run_by_the_service(make_settings, monkeypatch):
    from dataclasses import replace

    from cds_service.clinical.rules import registry

    calls = []
    renal = registry.RULE_BY_ID["ivig.safety.renal"]
    spy = replace(renal, check=lambda ctx: calls.append(ctx.hook) or renal.check(ctx))
    monkeypatch.setattr(registry, "RULES", tuple(spy if r.id == renal.id else r for r in registry.RULES))
    with TestClient(create_app(make_settings(**{"ivig.safety.renal": "off"}))) as client:
        resp = client.post(SELECT, json=load_json(REQUEST))
    # (the start-up warm-up evaluates an order-sign call of its own, with every rule)
    assert "order-select" not in calls
    assert "ivig.safety.renal" not in _rule_ids(resp) and "ivig.dose" in _rule_ids(resp)
    with TestClient(create_app(make_settings())) as client:
        assert "ivig.safety.renal" in _rule_ids(client.post(SELECT, json=load_json(REQUEST)))
    assert "order-select" in calls


def test_default_configuration_shows_every_card_and_lists_every_rule_on(make_settings):
    with TestClient(create_app(make_settings())) as client:
        resp = client.post(SELECT, json=load_json(REQUEST))
        discovery = client.get("/cds-services").json()
    assert set(_rule_ids(resp)) >= {"ivig.safety.renal", "ivig.dose"}
    ext = discovery["services"][0]["extension"]["org.neurosarcoidosis-cds.rule-modes"]
    assert sorted(ext["on"]) == sorted(RULE_IDS) and ext["shadow"] == ext["off"] == []


def test_a_refused_call_is_a_row_too_and_no_row_holds_a_patient_identifier(make_settings):
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        bad = load_json(REQUEST)
        del bad["context"]["draftOrders"]
        assert client.post(SELECT, json=bad).status_code == 400
        assert client.post(SELECT, json=load_json(REQUEST)).status_code == 200
    calls = _rows(settings, hook_calls)
    assert sorted(c["status"] for c in calls) == [200, 400]
    assert not any("patient" in column.name for column in hook_calls.columns)
    raw = (settings.data_dir / "cds_service.db").read_bytes()
    assert PATIENT.encode() not in raw


def test_the_rules_command_lists_modes_versions_and_what_changed(tmp_path):
    """The service ran with the default eGFR threshold; the site lowers it: `rules` names the change."""
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  ivig.safety.hyperviscosity: shadow\n", encoding="utf-8")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url=None, log_json=True, rules_file=f)
    with TestClient(create_app(settings)):
        pass  # the start records the versions it runs with
    env = clean_env(tmp_path, CDS_RULES_FILE=str(f))
    result = cli("rules", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["rule"]: r for r in json.loads(result.stdout)["rules"]}
    assert set(rows) == set(RULE_IDS)
    assert rows["ivig.safety.hyperviscosity"]["mode"] == "shadow" and rows["ivig.dose"]["mode"] == "on"
    assert rows["ivig.safety.renal"]["since"] and rows["ivig.safety.renal"]["changes"] == []

    result = cli("rules", "--json", env={**env, "CDS_EGFR_WARNING": "45"}, cwd=tmp_path)
    rows = {r["rule"]: r for r in json.loads(result.stdout)["rules"]}
    renal = rows["ivig.safety.renal"]
    assert renal["since"] == "new: not yet run by the service" and renal["previous"]
    assert renal["changes"] == ["threshold egfr_warning 60 -> 45"]
    assert rows["ivig.safety.thrombosis"]["changes"] == []
    table = cli("rules", env={**env, "CDS_EGFR_WARNING": "45"}, cwd=tmp_path).stdout
    assert "threshold egfr_warning 60 -> 45" in table and "shadow" in table


# --------------------------------------------------------------------------- store: denominators
async def test_hook_call_rows_are_idempotent_sanitised_and_purged(db_url):  # noqa: F811
    from datetime import UTC, datetime, timedelta

    store = open_store(db_url)
    try:
        await store.upgrade()
        now = datetime.now(UTC)
        rows = [CallRow(call_id="c1", service="svc", hook="order-sign", called_at=now - timedelta(days=400),
                        status=200, ig_orders=1),
                CallRow(call_id="c2", service="svc\x00x", hook="order-sign", called_at=now, status=412)]
        assert await store.record_audit(rows) == 2
        assert await store.record_audit(rows) == 0  # a retried batch does not double count
        got = await store.governance_rows(None, None)
        assert sorted(c[2] for c in got["calls"]) == [200, 412]
        await store.purge(now - timedelta(days=365))
        assert [c[2] for c in (await store.governance_rows(None, None))["calls"]] == [412]
    finally:
        await store.close()


def test_the_cli_evaluate_applies_the_site_modes_too(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  ivig.safety.renal: shadow\n  ivig.dose: off\n", encoding="utf-8")
    result = cli("evaluate", str(FIXTURE), "--json", env=clean_env(tmp_path, CDS_RULES_FILE=str(f)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rules = [c["extension"][RULE_ID_EXTENSION] for c in json.loads(result.stdout)["cards"]]
    assert "stage.s3r-gc-refractory" in rules and "ivig.safety.renal" not in rules and "ivig.dose" not in rules


def test_a_shadow_rule_appears_in_the_report_with_its_would_be_rate(tmp_path, monkeypatch):
    """Through the service: the shadow rule's cards never reach a response, yet the HTML report shows its
    firings per 100 immune globulin orders, and the cards shown beside it."""
    from typer.testing import CliRunner

    from cds_service.cli import _register_optional_commands
    from cds_service.cli import app as cli_app
    from cds_service.cli import main as _register  # noqa: F401 - the report command is registered lazily

    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  ivig.safety.renal: shadow\n", encoding="utf-8")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url=None, log_json=True, rules_file=f)
    with TestClient(create_app(settings)) as client:
        for _ in range(4):
            request = load_json(REQUEST)
            request["hookInstance"] = str(uuid.uuid4())
            assert "ivig.safety.renal" not in _rule_ids(client.post(SELECT, json=request))

    for name in [n for n in os.environ if n.startswith("CDS_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_RULES_FILE", str(f))
    _register_optional_commands()  # report and rules are registered when the CLI starts
    out = tmp_path / "report.html"
    try:
        result = CliRunner().invoke(cli_app, ["report", "--html", str(out), "--json"])
    finally:  # the settings cached for this CLI run (with its rules file) must not leak into later tests
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, (result.output, result.exception)
    figures = json.loads(result.stdout[result.stdout.index("{"):])
    rules = {r["rule"]: r for r in figures["rules"]}
    renal = rules["ivig.safety.renal"]
    assert renal["mode"] == "shadow"
    assert renal["total"] == {**renal["total"], "relevant_orders": 4, "shown": 0, "shadow": 4,
                              "shadow_per_100": 100.0}
    assert rules["ivig.dose"]["total"]["shown"] == 4 and rules["ivig.dose"]["total"]["shown_per_100"] == 100.0
    page = out.read_text(encoding="utf-8")
    assert 'id="burden-ivig.safety.renal"' in page and "shadow firings" in page


async def test_a_call_row_the_database_refuses_is_quarantined_and_the_rest_is_written():
    from store_support import make_card
    from test_audit import CountingMetrics, FakeStore, wait_for

    from cds_service.audit import AuditWriter, CallFacts
    from cds_service.store import CardRow, StoreError

    class RefusingCalls(FakeStore):
        def __init__(self):
            super().__init__()
            self.written: list = []

        async def record_audit(self, rows):
            if any(isinstance(r, CallRow) and r.hook == "poison" for r in rows):
                raise StoreError("text fields cannot contain NUL (test)")
            self.written.extend(rows)
            return len(rows)

    store, metrics = RefusingCalls(), CountingMetrics()
    writer = AuditWriter(store, b"k" * 32, metrics=lambda: metrics, interval=0.01)
    await writer.start()
    try:
        for hook, rule in (("order-sign", "rule.a"), ("poison", "rule.b"), ("order-sign", "rule.c")):
            writer.cards_issued(service="s", hook=hook, hook_instance="hi", patient_id="p", cards=[make_card(rule)],
                                shadow_cards=[make_card("rule.s")], call=CallFacts(ig_orders=1))
        await wait_for(lambda: writer.queued == 0, within=10)
    finally:
        await writer.stop()
    calls = [r for r in store.written if isinstance(r, CallRow)]
    card_rows = [r for r in store.written if isinstance(r, CardRow)]
    assert [c.hook for c in calls] == ["order-sign", "order-sign"]
    assert all(c.shadow_cards == 1 and c.ig_orders == 1 and c.cards_warning == 1 for c in calls)
    assert sorted(r.rule_id for r in card_rows if not r.shadow) == ["rule.a", "rule.b", "rule.c"]
    assert sum(r.shadow for r in card_rows) == 3
    assert metrics.counts[("dropped", "quarantined")] == 1
    assert metrics.counts[("written", "calls")] == 2 and metrics.counts[("written", "cards")] == 6
