"""Test support for the audit store: SQLite always, the real PostgreSQL when reachable, and an engine stub.

PostgreSQL tests run in a fresh schema per test (``search_path`` passed as a libpq option in the URL), so
reruns and parallel runs never see each other's rows; the schema is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from functools import lru_cache
from types import SimpleNamespace

import pytest

from cds_service.models import RULE_ID_EXTENSION, Card, Source, Suggestion, WireCard

PG_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@lru_cache(maxsize=1)
def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (the skip reason)."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means: skip
        return f"PostgreSQL not reachable at {PG_URL} (set CDS_TEST_POSTGRES_URL): {type(exc).__name__}"
    return None


def pg_url_with_schema(schema: str, plain: bool = False) -> str:
    base = PG_URL if plain else PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


class PgSchema:
    """A throw-away schema in the test database."""

    def __init__(self) -> None:
        self.name = "cds_test_" + uuid.uuid4().hex[:12]

    def __enter__(self) -> PgSchema:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        return self

    def __exit__(self, *exc) -> None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A SQLAlchemy async URL for an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with PgSchema() as schema:
        yield pg_url_with_schema(schema.name)


def make_card(rule: str, indicator: str = "warning", with_suggestion: bool = True) -> Card:
    suggestions = [Suggestion(label="Use the recommended alternative")] if with_suggestion else None
    return Card(summary=f"Card for {rule}", indicator=indicator, source=Source(label="test"),
                suggestions=suggestions, selectionBehavior="at-most-one" if suggestions else None,
                overrideReasons=[{"code": "not-applicable", "system": "https://example.org/override",
                                  "display": "Not applicable"}],
                extension={RULE_ID_EXTENSION: rule})


class StubEvaluation:
    def __init__(self, cards, orders=()):
        self.wire_cards = [WireCard.of(c) for c in cards]  # what the response encodes
        self.facts = SimpleNamespace(the_orders=list(orders))  # the call's orders, for the hook-call row


def stub_engine(monkeypatch, rules=(("test.rule-a", "warning"), ("test.rule-b", "info"))):
    """Make the rules engine answer fixed cards (fresh uuids per call), independent of clinical content."""
    from cds_service.clinical import engine

    def evaluate(record, hook, **_):
        return StubEvaluation([make_card(rule, indicator) for rule, indicator in rules])

    monkeypatch.setattr(engine, "evaluate", evaluate)
    monkeypatch.setattr(engine, "warm_up", lambda: None)
