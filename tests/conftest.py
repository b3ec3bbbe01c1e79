"""Shared test fixtures. Paths are relative to the repository so the tests run against an installed wheel too."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"  # test data copied into the repository (see tests/data/README.md)
CLIENT_EXAMPLES = DATA / "client-examples"
SYNTHEA = DATA / "synthea-r4"
FIXTURES = REPO / "fixtures"


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def free_port() -> int:
    """A loopback port nothing listens on right now (servers started by tests bind one of these)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path):
    from cds_service.config import Settings

    return Settings(data_dir=tmp_path / "data", log_json=True, trusted_issuers={}, redis_url=None,
                    database_url=None)


@pytest.fixture
def client(settings):
    from fastapi.testclient import TestClient

    from cds_service.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c
