"""Every fixture's cards, compared with a snapshot: a change to what any card says must be deliberate.

The snapshot (tests/snapshots/cards.json) holds, per fixture and hook, each card's rule id, indicator,
summary, detail, source and suggestions, with uuids and suggested resources' ids removed. Refactoring
must leave it untouched; a clinical change regenerates it on purpose and the diff is reviewed with it:

    python -m tests.test_snapshot --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cds_service.evaluate import evaluate_bundle
from cds_service.models import RULE_ID_EXTENSION

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted((ROOT / "fixtures" / "fhir").glob("*.json"))
SNAPSHOT = ROOT / "tests" / "snapshots" / "cards.json"
HOOKS = ("order-select", "order-sign")


def _strip(value: Any) -> Any:
    """``value`` without the parts made fresh on every call (uuids, the ids of suggested resources)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in {"uuid", "id"}}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def cards_of(path: Path, hook: str) -> list[dict[str, Any]]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    _, response = evaluate_bundle(bundle, hook)
    out = []
    for card in response["cards"]:
        out.append({
            "rule": (card.get("extension") or {}).get(RULE_ID_EXTENSION),
            "indicator": card["indicator"],
            "summary": card["summary"],
            "detail": card.get("detail"),
            "source": _strip(card.get("source")),
            "suggestions": _strip(card.get("suggestions", [])),
            "selectionBehavior": card.get("selectionBehavior"),
        })
    return out


def current() -> dict[str, Any]:
    return {f"{p.name} {hook}": cards_of(p, hook) for p in FIXTURES for hook in HOOKS}


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize("hook", HOOKS)
def test_fixture_cards_match_the_snapshot(path: Path, hook: str, snapshot, monkeypatch) -> None:
    monkeypatch.setenv("CDS_SMART_LINKS_UNAUTHENTICATED", "false")
    key = f"{path.name} {hook}"
    assert key in snapshot, f"{key} has no snapshot: run python -m tests.test_snapshot --update"
    assert cards_of(path, hook) == snapshot[key]


if __name__ == "__main__":
    if "--update" not in sys.argv:
        sys.exit("usage: python -m tests.test_snapshot --update")
    SNAPSHOT.write_text(json.dumps(current(), indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                        encoding="utf-8")
    print(f"wrote {SNAPSHOT}")

