"""The packaged fixture bundles (``fixtures/fhir/*.json``) and their expectations (``fixtures/expected/*.yaml``).

A wheel carries the repository's ``fixtures/`` inside the package as ``cds_service/fixtures``
(pyproject force-include); a source checkout or editable install keeps it at the repository root.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cds_service.clinical.resources import data_path
from cds_service.config import get_settings
from cds_service.errors import NotFound
from cds_service.services import registry

# Fixture names become URL path segments and file names: keep them boring (no dots, no slashes).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def fixtures_dir(kind: str = "fhir") -> Path:
    """``fixtures/<kind>`` (``fhir`` or ``expected``) of the installed package, else of the source tree."""
    return data_path(f"fixtures/{kind}")


def _read_expectation(folder: Path, name: str) -> dict[str, Any]:
    import yaml

    for suffix in (".yaml", ".yml"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                return {}  # a broken expectation file must not take the fixture list down
            return doc if isinstance(doc, dict) else {}
    return {}


def expected(name: str) -> dict[str, Any]:
    """The expectation file of packaged fixture ``name`` as a dict ({} when there is none or it is unreadable)."""
    return _read_expectation(fixtures_dir("expected"), name)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _order_of(meta: dict[str, Any]) -> str | None:
    order = meta.get("order")
    if isinstance(order, list):  # tolerate a one-element list
        order = order[0] if order else None
    return _text(order)


def _hook_of(meta: dict[str, Any]) -> str | None:
    hook = meta.get("hook")
    if isinstance(hook, list):
        hook = hook[0] if hook else None
    service = registry(get_settings()).for_hook(hook) if isinstance(hook, str) else None
    return hook if service is not None and service.places_orders else None


def expected_cards(meta: dict[str, Any]) -> list[dict[str, str]]:
    """The cards an expectation file promises, as ``[{"rule_id": ..., "indicator": ...}]``.

    Accepts ``cards:`` (or ``expected_cards:`` / ``expect: {cards: ...}``) holding mappings with
    ``rule_id``/``rule``/``id`` and ``indicator``, or bare rule-id strings.
    """
    raw = meta.get("cards")
    if raw is None:
        raw = meta.get("expected_cards")
    if raw is None and isinstance(meta.get("expect"), dict):
        raw = meta["expect"].get("cards")
    out: list[dict[str, str]] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            out.append({"rule_id": item})
        elif isinstance(item, dict):
            rule = next((item[k] for k in ("rule_id", "rule", "id") if isinstance(item.get(k), str)), None)
            card: dict[str, str] = {}
            if rule:
                card["rule_id"] = rule
            if item.get("indicator") in ("critical", "warning", "info"):
                card["indicator"] = item["indicator"]
            if card:
                out.append(card)
    return out


def _read_bundle(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_fixtures() -> list[dict[str, Any]]:
    """One summary per packaged bundle: name, title, description, hook, order, expected cards."""
    folder = fixtures_dir("fhir")
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        name = path.stem
        if not NAME_RE.match(name):
            continue
        meta = expected(name)
        title = _text(meta.get("title")) or name.replace("-", " ").replace("_", " ")
        item: dict[str, Any] = {"name": name, "title": title}
        description = _text(meta.get("description"))
        if description:
            item["description"] = description
        for key, value in (("hook", _hook_of(meta)), ("order", _order_of(meta))):
            if value:
                item[key] = value
        cards = expected_cards(meta)
        if cards or meta:
            item["expectedCards"] = cards
        out.append(item)
    return out


def load_fixture(name: str) -> dict[str, Any]:
    """The bundle of packaged fixture ``name``; 404 for unknown (or path-like) names."""
    if not NAME_RE.match(name):
        raise NotFound(f"There is no packaged fixture named '{name[:80]}'.")
    path = fixtures_dir("fhir") / f"{name}.json"
    if not path.is_file():
        raise NotFound(f"There is no packaged fixture named '{name}'.")
    bundle = _read_bundle(path)
    if bundle is None:
        raise NotFound(f"The packaged fixture '{name}' is not a readable JSON object.")
    return bundle


def expectation_for(bundle_path: Path) -> dict[str, Any]:
    """Hook, order and expected cards of a bundle file laid out like the fixtures (``fhir/x.json`` beside
    ``expected/x.yaml``), so ``cds-service evaluate fixtures/fhir`` places each fixture's own order.
    Empty for any other file."""
    meta = _read_expectation(bundle_path.parent.parent / "expected", bundle_path.stem)
    if not meta:
        return {}
    out: dict[str, Any] = {"cards": expected_cards(meta)}
    for key, value in (("hook", _hook_of(meta)), ("order", _order_of(meta))):
        if value:
            out[key] = value
    return out
