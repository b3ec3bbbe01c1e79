"""Rule versions: a short digest of everything a rule reads, so analytics can split by version.

What each rule reads is data, ``cds_service/clinical/criteria/rule_inputs.yaml`` (card texts, thresholds,
value-set categories, criteria files); the sentences of ``cards/_phrases.yaml`` under the rule's id (or its
group's) and the risk factors of ``criteria/risk_factors.yaml`` that name its card are added from there.
A rule's version changes when, and only when, one of those changes: a site raising ``CDS_EGFR_WARNING``
changes the version of ``ivig.safety.renal`` and of no rule that does not read it. The
service records each version the first time it runs with it (``cds_rule_version``), so ``cds-service rules``
can say what changed since the previous one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INPUTS_FILE = "clinical/criteria/rule_inputs.yaml"
ORDER_KINDS = ("immune-globulin", "ladder-or-immune-globulin")
DIGEST_CHARS = 12


@functools.lru_cache(maxsize=1)
def rule_inputs() -> dict[str, dict[str, Any]]:
    """Rule id -> {"cards": [...], "thresholds": [...], "value_sets": [...], "orders": kind}."""
    file = Path(__file__).resolve().parent.parent / INPUTS_FILE
    doc = _load_yaml(file.read_text(encoding="utf-8")) or {}
    return {k: {"cards": list(v.get("cards") or ()), "thresholds": list(v.get("thresholds") or ()),
                "value_sets": list(v.get("value_sets") or ()), "criteria": list(v.get("criteria") or ()),
                "orders": v.get("orders")}
            for k, v in doc.items() if not k.startswith("_")}


CRITERIA = {  # the names a rule may list under `criteria`: (file in clinical/criteria/, top-level key)
    "contraindications": ("contraindications.yaml", None),
    "derived_factors": ("risk_factors.yaml", "derived_factors"),
    "immune_globulin": ("immune_globulin.yaml", None),
    "ladder_steps": ("ladder_steps.yaml", None),
}


def _load_yaml(text: str) -> Any:
    import yaml

    # libyaml's safe loader when PyYAML has it: the same documents, quicker start-up
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=4)
def _criteria_file(name: str) -> dict[str, Any]:
    file = Path(__file__).resolve().parent.parent / "clinical" / "criteria" / name
    return _load_yaml(file.read_text(encoding="utf-8")) or {}


def criteria_part(name: str) -> Any:
    file, key = CRITERIA[name]
    doc = _criteria_file(file)
    return doc if key is None else doc.get(key)


def risk_factors_of(rule_id: str) -> list[dict[str, Any]]:
    """The entries of risk_factors.yaml that feed ``rule_id``'s card (their ``cards`` name it)."""
    return [f for f in _criteria_file("risk_factors.yaml").get("risk_factors") or ()
            if rule_id in (f.get("cards") or ())]


def phrases_of(rule_id: str, library: dict[str, Any]) -> dict[str, Any]:
    """The sentences of ``_phrases`` the rule puts into its card: its own and its group's."""
    phrases = library.get("_phrases") or {}
    return {key: value for key, value in phrases.items() if rule_id == key or rule_id.startswith(key + ".")}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class RuleVersion:
    rule_id: str
    version: str
    inputs: dict[str, Any]  # {"cards": {key: digest}, "thresholds": {name: value}, "value_sets": {name: digest}}


def version_inputs(rule_id: str, sets: dict[str, str], *, thresholds=None, library=None) -> dict[str, Any]:
    """What ``rule_id`` reads, reduced to digests and threshold values (``sets``: every value set's digest)."""
    from cds_service.clinical.cards import card_library
    from cds_service.clinical.thresholds import get_thresholds

    th = thresholds or get_thresholds()
    lib = library if library is not None else card_library()
    spec = rule_inputs()[rule_id]
    cards = {key: _digest(lib.get(key)) for key in spec["cards"]}
    cards.update({f"_phrases.{key}": _digest(value) for key, value in phrases_of(rule_id, lib).items()})
    criteria = {name: _digest(criteria_part(name)) for name in spec["criteria"]}
    factors = risk_factors_of(rule_id)
    if factors:
        criteria["risk_factors"] = _digest(factors)
    return {
        "cards": cards,
        "thresholds": {name: getattr(th, name) for name in spec["thresholds"]},
        "value_sets": {name: sets.get(name, _digest([])) for name in spec["value_sets"]},
        "criteria": criteria,
    }


def _value_set_digests(term) -> dict[str, str]:
    return {name: _digest(sorted((e.system, e.code, e.prefix, e.verified) for e in entries))
            for name, entries in term.value_sets().items()}


def version_of(inputs: dict[str, Any]) -> str:
    return _digest(inputs)


def current_versions(*, thresholds=None, terminology=None, library=None) -> dict[str, RuleVersion]:
    """The version of every rule with the running configuration (thresholds, site codes, card texts)."""
    from cds_service.clinical.terminology import get_terminology

    sets = _value_set_digests(terminology or get_terminology())  # the same for every rule: digested once
    out = {}
    for rule_id in rule_inputs():
        inputs = version_inputs(rule_id, sets, thresholds=thresholds, library=library)
        out[rule_id] = RuleVersion(rule_id, version_of(inputs), inputs)
    return out


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two versions' inputs, in words a committee reads ("egfr_warning 60 -> 45")."""
    out = []
    old_th, new_th = before.get("thresholds") or {}, after.get("thresholds") or {}
    for name in sorted(set(old_th) | set(new_th)):
        if old_th.get(name) != new_th.get(name):
            out.append(f"threshold {name} {_show(old_th.get(name))} -> {_show(new_th.get(name))}")
    for part, label in (("cards", "card text"), ("value_sets", "value set"), ("criteria", "criteria")):
        old, new = before.get(part) or {}, after.get(part) or {}
        for name in sorted(set(old) | set(new)):
            if name not in old:
                out.append(f"{label} {name} now read")
            elif name not in new:
                out.append(f"{label} {name} no longer read")
            elif old[name] != new[name]:
                out.append(f"{label} {name} changed")
    return out


def _show(value: Any) -> str:
    if value is None:
        return "(not read)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
