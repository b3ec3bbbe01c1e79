"""``cds-service report`` / ``purge`` / ``db upgrade`` and the whole trail surviving service restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import typer
from conftest import FIXTURES, load_json
from store_support import stub_engine
from typer.testing import CliRunner

from cds_service.store import CardRow, FeedbackRow, open_store
from cds_service.store.cli import register

RESTART_FIXTURE = FIXTURES / "fhir" / "02-s1-conduction-block-ivig.json"
SELECT = "/cds-services/neurosarcoidosis-order-select"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """The operations commands, reading settings from the environment like the real CLI."""
    from cds_service.config import get_settings

    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    yield run
    get_settings.cache_clear()


def seed(url: str, cards: list[CardRow], feedback: list[FeedbackRow]) -> None:
    async def go():
        store = open_store(url)
        try:
            await store.upgrade()
            await store.record_cards(cards)
            await store.record_feedback(feedback)
        finally:
            await store.close()

    asyncio.run(go())


def _card(rule, at=NOW):
    return CardRow(str(uuid.uuid4()), "neurosarcoidosis-order-select", "order-select", rule, "warning", "hi", at,
                   "k" * 64)


def _fb(card, outcome="overridden", code="patient-declined", display="Patient declined"):
    return FeedbackRow(card.card_uuid, card.service, outcome, NOW + timedelta(minutes=1), NOW,
                       ("s1",) if outcome == "accepted" else (), code if outcome == "overridden" else None, None,
                       display if outcome == "overridden" else None)


def test_report_json_has_the_documented_shape(cli, tmp_path):
    a = [_card("stage.s1-untreated") for _ in range(3)]
    b = [_card("ivig.dose")]
    seed(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}", a + b,
         [_fb(a[0]), _fb(a[1], code="other"), _fb(a[2], outcome="accepted")])
    out = json.loads(cli("report", "--json").stdout)
    assert list(out) == ["rules"]
    first = out["rules"][0]
    assert {"rule", "shown", "accepted", "overridden", "override_reasons"} <= set(first)
    assert first == {"rule": "stage.s1-untreated", "shown": 3, "accepted": 1, "overridden": 2,
                     "override_rate": 0.6667, "override_reasons": {"other": 1, "patient-declined": 1}}
    assert out["rules"][1]["rule"] == "ivig.dose" and out["rules"][1]["override_reasons"] == {}


def test_report_table_is_readable(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    a = [_card("stage.s1-untreated") for _ in range(2)]
    seed(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}", a, [_fb(a[0])])
    text = cli("report").stdout
    assert "stage.s1-untreated" in text and "50%" in text and "patient-declined (Patient declined): 1" in text


def test_report_period_filters_by_when_cards_were_shown(cli, tmp_path):
    old = _card("rule.old", at=NOW - timedelta(days=40))
    new = _card("rule.new")
    seed(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}", [old, new], [])
    since = (NOW - timedelta(days=7)).date().isoformat()
    rules = [r["rule"] for r in json.loads(cli("report", "--json", "--since", since).stdout)["rules"]]
    assert rules == ["rule.new"]
    until = (NOW - timedelta(days=30)).date().isoformat()
    rules = [r["rule"] for r in json.loads(cli("report", "--json", "--until", until).stdout)["rules"]]
    assert rules == ["rule.old"]
    bad = cli("report", "--since", "last tuesday", ok=False)
    assert bad.exit_code == 2 and "not a date" in bad.output


@pytest.mark.parametrize("command", [("report", "--json"), ("report",), ("purge",)])
def test_report_and_purge_refuse_a_database_that_does_not_exist(cli, tmp_path, command):
    """Run where the service does not run (or with CDS_DATA_DIR elsewhere): say so, create nothing."""
    result = cli(*command, ok=False)
    db = tmp_path / "data" / "cds_service.db"
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines()[0] == f"Database: SQLite {db}"
    assert f"there is no audit database at {db}" in result.stderr and "db upgrade" in result.stderr
    assert not (tmp_path / "data").exists()


def test_db_current_looks_without_creating(cli, tmp_path):
    result = cli("db", "current")
    assert result.stdout.strip() == "none" and "(no such file)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_report_from_another_directory_creates_nothing_there(tmp_path):
    """The real command in a directory that is not the service's: no ./data appears, the message says where
    it looked and what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["report"], ["purge"], ["db", "current"]):
        result = subprocess.run([sys.executable, "-m", "cds_service", *command], cwd=elsewhere, env=env,
                                capture_output=True, text=True, timeout=120)
        assert f"Database: SQLite {elsewhere / 'data' / 'cds_service.db'}" in result.stderr
        assert "Traceback" not in result.stderr
    assert list(elsewhere.iterdir()) == []


@pytest.mark.postgres
def test_purge_and_report_leave_a_database_without_tables_alone():
    from store_support import PgSchema, pg_url_with_schema, postgres_unavailable

    if postgres_unavailable():
        pytest.skip(postgres_unavailable())
    with PgSchema() as schema:
        url = pg_url_with_schema(schema.name, plain=True)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CDS_")}, "CDS_DATABASE_URL": url}
        for command in (["report"], ["purge"]):
            result = subprocess.run([sys.executable, "-m", "cds_service", *command], env=env,
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 1, result.stderr
            assert "no audit tables" in result.stderr
            # which database, never its user or password
            assert "Database: PostgreSQL 127.0.0.1:5432/test" in result.stderr and "postgres@" not in result.stderr
        import psycopg

        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                                  (schema.name,)).fetchone()[0]
        assert tables == 0


def test_db_upgrade_and_purge(cli, tmp_path):
    assert "revision 0002" in cli("db", "upgrade").stdout
    assert cli("db", "current").stdout.strip() == "0002"
    old = _card("rule.old", at=NOW - timedelta(days=400))
    seed(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}", [old, _card("rule.new")], [_fb(old)])
    assert "Deleted 2 rows" in cli("purge").stdout  # default retention 365 days: the old card + its feedback
    rules = [r["rule"] for r in json.loads(cli("report", "--json").stdout)["rules"]]
    assert rules == ["rule.new"]


def test_unreachable_database_is_one_line_and_exit_1(cli, monkeypatch):
    from cds_service.config import get_settings

    monkeypatch.setenv("CDS_DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/none?connect_timeout=2")
    get_settings.cache_clear()
    result = cli("report", ok=False)
    assert result.exit_code == 1 and "Error:" in result.stderr and "Traceback" not in result.output


def test_repeated_feedback_posts_do_not_double_count(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from test_app import hook_request

    from cds_service.app import create_app
    from cds_service.config import Settings

    stub_engine(monkeypatch)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, database_url=None)
    with TestClient(create_app(settings)) as client:
        cards = client.post(SELECT, json=hook_request()).json()["cards"]
        item = {"card": cards[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-03-01T10:00:00Z",
                "overrideReason": {"reason": {"code": "not-applicable", "system": "https://x"}}}
        for _ in range(3):
            assert client.post(SELECT + "/feedback", json={"feedback": [item, item]}).status_code == 200
        same_instant = dict(item, outcomeTimestamp="2026-03-01T11:00:00.000+01:00")
        assert client.post(SELECT + "/feedback", json={"feedback": [same_instant]}).status_code == 200

    async def report():
        store = open_store(settings)
        try:
            return {r.rule: r for r in await store.report(None, None)}
        finally:
            await store.close()

    rules = asyncio.run(report())
    assert rules["test.rule-a"].overridden == 1 and rules["test.rule-a"].override_reasons == {"not-applicable": 1}
    assert rules["test.rule-b"].shown == 1 and rules["test.rule-b"].overridden == 0


# --------------------------------------------------------------------------- restart: a real server process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(CDS_DATA_DIR=str(data_dir), CDS_LOG_LEVEL="WARNING")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cds_service.cli import main; main()", *args]


class Server:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(_cli("serve", "--port", str(self.port)), env=_env(self.tmp_path / "data"),
                                     cwd=self.tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan flushes the audit queue
        try:
            # uvicorn re-raises the signal after a graceful shutdown (lifespan done): -SIGTERM is a clean exit
            assert self.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stderr.close()


def _override(card_uuid: str, code: str, minute: int) -> dict:
    return {"card": card_uuid, "outcome": "overridden", "outcomeTimestamp": f"2026-03-01T10:{minute:02d}:00Z",
            "overrideReason": {"reason": {"code": code, "system": "https://example.org/override"},
                               "userComment": "restart test"}}


def test_cards_and_feedback_survive_restarts(tmp_path):
    """serve -> hook -> feedback -> stop -> serve -> hook -> feedback (+ a repeat) -> stop -> report.

    Built from a fixture that yields cards with the clinical engine (stage.s1-untreated, IVIG indication,
    IVIG dose). Should the engine answer no cards, the feedback still has to survive, under 'unknown'.
    """
    from cds_service.evaluate import build_request

    bundle = load_json(RESTART_FIXTURE)
    issued: list[dict] = []
    posted: list[dict] = []
    for run in range(2):
        with Server(tmp_path) as server:
            request = build_request(bundle, "order-select", "MedicationRequest/ivig-order-1")
            resp = httpx.post(server.url + SELECT, json=request, timeout=30)
            assert resp.status_code == 200, resp.text
            cards = resp.json()["cards"]
            issued.extend(cards)
            target = cards[0]["uuid"] if cards else f"unknown-card-{run}"
            item = _override(target, "patient-declined" if run == 0 else "other", minute=run)
            body = {"feedback": [item] + posted}  # run 2 re-sends run 1's feedback: must not count twice
            resp = httpx.post(server.url + SELECT + "/feedback", json=body, timeout=30)
            assert resp.status_code == 200, resp.text
            posted.append(item)

    result = subprocess.run(_cli("report", "--json"), env=_env(tmp_path / "data"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rules = {r["rule"]: r for r in json.loads(result.stdout)["rules"]}
    if not issued:
        assert rules == {"unknown": {"rule": "unknown", "shown": 0, "accepted": 0, "overridden": 2,
                                     "override_rate": None, "override_reasons": {"other": 1, "patient-declined": 1}}}
        pytest.skip("the rules engine answered no cards for the fixture: only the feedback trail was checked")
    shown: dict[str, int] = {}
    for card in issued:
        rule = card["extension"]["org.neurosarcoidosis-cds.rule-id"]
        shown[rule] = shown.get(rule, 0) + 1
    assert {r: v["shown"] for r, v in rules.items()} == shown
    first_rule = issued[0]["extension"]["org.neurosarcoidosis-cds.rule-id"]
    assert rules[first_rule]["overridden"] == 2  # one card per run, the repeat not counted
    assert rules[first_rule]["override_reasons"] == {"other": 1, "patient-declined": 1}
    assert sum(r["overridden"] for r in rules.values()) == 2
