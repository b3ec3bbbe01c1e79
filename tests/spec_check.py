"""An independent check that a CDS Hooks response follows 2.0.1 (used by several test modules)."""

from __future__ import annotations

from typing import Any

INDICATORS = {"info", "warning", "critical"}


def _no_empty(value: Any, path: str) -> None:
    if value is None or value == "" or value == [] or value == {}:
        raise AssertionError(f"{path} is null or empty (the spec forbids it)")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]")


def assert_spec_valid_response(body: dict[str, Any]) -> None:
    assert set(body) <= {"cards", "systemActions"}, body.keys()
    assert isinstance(body["cards"], list)
    for i, card in enumerate(body["cards"]):
        _no_empty(card, f"cards[{i}]")
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140, card["summary"]
        assert card["indicator"] in INDICATORS
        assert card["source"]["label"]
        assert card.get("uuid"), "every card carries a uuid (feedback needs it)"
        if card.get("suggestions"):
            assert card.get("selectionBehavior") in ("any", "at-most-one")
            for s in card["suggestions"]:
                assert s["label"] and s.get("uuid")
                for a in s.get("actions", []):
                    assert a["type"] in ("create", "update", "delete") and a["description"]
        else:
            assert "selectionBehavior" not in card
        for r in card.get("overrideReasons", []):
            assert r["code"] and r["system"] and r["display"]
        for link in card.get("links", []):
            assert link["label"] and link["url"] and link["type"] in ("absolute", "smart")
