"""Render fired rules into CDS Hooks cards from the clinician-reviewed texts in ``cards/*.yaml``.

Every card gets (DECISIONS 16-17): a summary under 140 characters with the numbers the rule used, the
evidence level in ``detail`` and in ``extension[EVIDENCE_EXTENSION]``, the facts that fired it with their
FHIR references (listed in ``detail`` and in ``extension[FACTS_EXTENSION]``), ``source.label`` + ``url``,
``overrideReasons`` on warning/critical cards, the rule id in ``extension[RULE_ID_EXTENSION]``, and
suggestions as one ``create`` action each (draft MedicationRequest/ServiceRequest, RxNorm or LOINC coded)
with ``selectionBehavior: any`` and a uuid on the card and on every suggestion.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any

from . import models
from .facts import FactRef, Facts, fmt
from .resources import load_yaml_dir
from .rules import Fired
from .terminology import SYSTEM_URI, get_terminology
from .thresholds import Thresholds

MAX_SUMMARY = 139
_SYSTEMS = {"rxnorm": SYSTEM_URI["RXNORM"], "loinc": SYSTEM_URI["LOINC"], "snomed": SYSTEM_URI["SNOMED"]}
_ROUTES = {"oral": ("26643006", "Oral route"), "iv": ("47625008", "Intravenous route"),
           "sc": ("34206005", "Subcutaneous route")}
UCUM = "http://unitsofmeasure.org"


class CardSpecError(ValueError):
    pass


@functools.lru_cache(maxsize=1)
def card_library() -> dict[str, Any]:
    """All card YAML merged (loaded once)."""
    lib = load_yaml_dir("cards")
    for key in ("_sources", "_override_reasons", "_conditional"):
        if key not in lib:
            raise CardSpecError(f"cards/: missing {key}")
    return lib


def spec_for(rule_id: str) -> dict[str, Any]:
    lib = card_library()
    try:
        return lib[rule_id]
    except KeyError as exc:
        raise CardSpecError(f"no card text for rule {rule_id!r} in cards/*.yaml") from exc


# ------------------------------------------------------------------------------------------- templates
class _ThresholdView:
    """``{t.name}`` in templates: the threshold value formatted for people."""

    def __init__(self, th: Thresholds) -> None:
        self._th = th

    def __getattr__(self, name: str) -> str:
        value = getattr(self._th, name)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int | float):
            return fmt(float(value), 2)
        return str(value)


def fill(template: str, values: dict[str, Any], th: Thresholds) -> str:
    mapping = dict(values)
    mapping["t"] = _ThresholdView(th)
    for k, v in list(mapping.items()):
        if isinstance(v, list):
            mapping[k] = ", ".join(str(x) for x in v)
        elif isinstance(v, float):
            mapping[k] = fmt(v)
    return template.format_map(mapping).strip()


def fit_summary(template: str, values: dict[str, Any], th: Thresholds, prefix: str = "") -> str:
    """Fill the summary; shorten list values ("+N more") until it is under 140 characters."""
    values = dict(values)
    text = prefix + fill(template, values, th)
    lists = [k for k, v in values.items() if isinstance(v, list) and v]
    while len(text) > MAX_SUMMARY and lists:
        k = max(lists, key=lambda key: len(values[key]))
        items = [x for x in values[k] if not str(x).startswith("+")]
        dropped = len(values[k]) - len(items)
        if len(items) <= 1:
            lists.remove(k)
            continue
        hidden = (int(str(values[k][-1])[1:].split()[0]) if dropped else 0) + 1
        values[k] = items[:-1] + [f"+{hidden} more"]
        text = prefix + fill(template, values, th)
    if len(text) > MAX_SUMMARY:
        text = text[: MAX_SUMMARY - 1].rstrip() + "…"
    return text


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def md_escape(text: str) -> str:
    """Escape EHR-supplied text before it goes into Markdown (no links/HTML from the record)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


# ------------------------------------------------------------------------------------------- resources
def _coding(spec: dict[str, Any]) -> list[dict[str, str]]:
    system = spec.get("system")
    if system == "ivig":
        term = get_terminology()
        codings = [{"system": _SYSTEMS["rxnorm"], "code": c, "display": "immune globulin G (human), intravenous"}
                   for c in sorted(term.ivig_rxnorm)]
        codings.append({"system": SYSTEM_URI["ATC"], "code": "J06BA02",
                        "display": "immunoglobulins, normal human, for intravascular adm."})
        return codings
    return [{"system": _SYSTEMS[system], "code": str(spec["code"]), "display": str(spec.get("display", ""))}]


def _num(value: str) -> float | int:
    v = float(str(value).replace(",", ""))
    return int(v) if v.is_integer() else v


def build_resource(sug: dict[str, Any], values: dict[str, Any], facts: Facts, th: Thresholds,
                   label: str) -> dict[str, Any]:
    rtype = sug.get("resourceType", "MedicationRequest")
    codings = _coding(sug["code"])
    display = codings[0].get("display") or label
    subject = {"reference": facts.patient_ref}
    if rtype == "ServiceRequest":
        return {"resourceType": "ServiceRequest", "id": str(uuid.uuid4()), "status": "draft", "intent": "order",
                "code": {"coding": codings, "text": display}, "subject": subject}
    if sug["code"].get("system") == "ivig":
        display = "Immune globulin G (human), intravenous (IVIG)"
    dosage: dict[str, Any] = {"text": label}
    route = sug.get("route")
    if route in _ROUTES:
        code, disp = _ROUTES[route]
        dosage["route"] = {"coding": [{"system": SYSTEM_URI["SNOMED"], "code": code, "display": disp}]}
    timing = sug.get("timing")
    if isinstance(timing, dict):
        rep = {}
        for k, v in timing.items():
            rep[k] = _num(fill(v, values, th)) if isinstance(v, str) and "{" in v else v
        dosage["timing"] = {"repeat": rep}
    dose = sug.get("dose")
    if isinstance(dose, dict):
        unit = dose.get("unit", "mg")
        dosage["doseAndRate"] = [{"doseQuantity": {"value": _num(fill(str(dose["value"]), values, th)),
                                                    "unit": unit, "system": UCUM, "code": unit}}]
    return {
        "resourceType": "MedicationRequest",
        "id": str(uuid.uuid4()),
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": codings, "text": display},
        "subject": subject,
        "dosageInstruction": [dosage],
    }


# ------------------------------------------------------------------------------------------- cards
def render(fired: Fired, facts: Facts, th: Thresholds) -> models.Card:
    lib = card_library()
    spec = dict(spec_for(fired.rule_id))
    if fired.variant:
        variant = (spec.get("variants") or {}).get(fired.variant)
        if variant is None:
            raise CardSpecError(f"{fired.rule_id}: no variant {fired.variant!r}")
        spec.update(variant)
    values = dict(fired.values)
    values.setdefault("ns_status", facts.ns_status)
    cond = lib["_conditional"]
    prefix = cond["summary_prefix"] if fired.conditional else ""
    summary = fit_summary(spec["summary"], values, th, prefix)

    evidence = spec["evidence"]
    src = lib["_sources"][spec.get("source") or evidence["source"]]
    parts: list[str] = []
    if fired.conditional:
        parts.append(fill(cond["detail"], values, th))
    parts.append(fill(spec.get("detail", ""), values, th))
    parts.append(f"**{lib.get('_evidence_heading', 'Evidence level')}:** {evidence['level']}. "
                 f"Source: {src['citation']}.")
    if fired.facts:
        lines = [f"**{lib.get('_facts_heading', 'Facts used')}**", ""]
        for fr in fired.facts:
            ref = f" (`{fr.reference}`)" if fr.reference else ""
            lines.append(f"- {md_escape(fr.fact)}: {md_escape(fr.value)}{ref}")
        parts.append("\n".join(lines))
    detail = "\n\n".join(p for p in parts if p)

    suggestions = []
    for sug in spec.get("suggestions") or ():
        if sug.get("key") not in fired.suggestions:
            continue
        label = fill(sug["label"], values, th)
        resource = build_resource(sug, values, facts, th, label)
        suggestions.append(models.Suggestion(label=label, uuid=str(uuid.uuid4()), actions=[
            models.Action(type="create", description=label, resource=resource)]))

    indicator = spec["indicator"]
    override = None
    if indicator in ("warning", "critical"):
        ors = lib["_override_reasons"]
        system = ors["system"]
        override = [models.OverrideReason(code=r["code"], system=system, display=r["display"])
                    for r in ors["sets"][spec.get("override_reasons") or "default"]]
    links = [models.Link(label=lk["label"], url=lk["url"], type="absolute") for lk in spec.get("links") or ()]
    extension = {
        models.RULE_ID_EXTENSION: fired.rule_id,
        models.EVIDENCE_EXTENSION: {"level": evidence["level"], "citation": src["citation"], "url": src["url"]},
        models.FACTS_EXTENSION: [fr.as_dict() for fr in fired.facts],
    }
    return models.Card(
        uuid=str(uuid.uuid4()),
        summary=summary,
        detail=detail,
        indicator=indicator,
        source=models.Source(label=src["label"], url=src["url"]),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=override,
        links=links or None,
        extension=extension,
    )


def render_all(fired: list[Fired], facts: Facts, th: Thresholds) -> list[models.Card]:
    cards = [render(f, facts, th) for f in fired]
    cards.sort(key=lambda c: models.INDICATOR_RANK[c.indicator])  # stable: rule order within a rank
    return cards


def rule_id_of(card: models.Card) -> str:
    return str((card.extension or {}).get(models.RULE_ID_EXTENSION))


__all__ = ["render", "render_all", "card_library", "fill", "fit_summary", "FactRef", "rule_id_of"]
