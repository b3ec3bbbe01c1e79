"""Render fired rules into CDS Hooks cards from the clinician-reviewed texts in ``cards/*.yaml``.

Every card gets (decisions 16-17): a summary under 140 characters with the numbers the rule used, the
evidence level in ``detail`` and in ``extension[EVIDENCE_EXTENSION]``, the facts that fired it with their
FHIR references (listed in ``detail`` and in ``extension[FACTS_EXTENSION]``), ``source.label`` + ``url``,
``overrideReasons`` on warning/critical cards, the rule id in ``extension[RULE_ID_EXTENSION]``, and
suggestions as one ``create`` action each (draft MedicationRequest/ServiceRequest, RxNorm or LOINC coded)
with ``selectionBehavior: any`` and a uuid on the card and on every suggestion.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from cds_service import models

from . import markup
from .facts import FactRef, Facts, fmt
from .resources import load_yaml_dir
from .terminology import SYSTEM_URI, get_terminology
from .thresholds import Thresholds

if TYPE_CHECKING:  # cards renders what the rules fire; the rules read phrases from the card texts
    from .rules.context import Fired

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
    """``{t.name}`` in templates: the threshold value formatted for people.

    A view lives for one ``render_all`` call (the thresholds do not change meanwhile); a formatted value
    is kept on the instance, so the next ``{t.name}`` is a plain attribute read."""

    def __init__(self, th: Thresholds) -> None:
        self._th = th

    def __getattr__(self, name: str) -> str:
        value = getattr(self._th, name)
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = fmt(float(value), 2)
        else:
            text = str(value)
        self.__dict__[name] = text
        return text


def _mapping(values: dict[str, Any], th: Thresholds, view: _ThresholdView | None = None) -> dict[str, Any]:
    """What a template is formatted with: lists joined, floats formatted, ``t`` the threshold view.

    Every value may quote the record (a product name, a Condition's text), so each is made literal
    text here, the one place values meet the card templates; only the templates themselves are markup."""
    mapping = dict(values)
    for k, v in list(mapping.items()):
        if isinstance(v, list):
            mapping[k] = ", ".join(md_escape(x) for x in v)
        elif isinstance(v, float):
            mapping[k] = fmt(v)
        elif isinstance(v, str):
            mapping[k] = md_escape(v)
    mapping["t"] = view if view is not None else _ThresholdView(th)
    return mapping


def fill(template: str, values: dict[str, Any], th: Thresholds) -> str:
    return template.format_map(_mapping(values, th)).strip()


def fit_summary(template: str, values: dict[str, Any], th: Thresholds, prefix: str = "",
                mapping: dict[str, Any] | None = None) -> str:
    """Fill the summary; shorten list values ("+N more") until it is under 140 characters.

    ``mapping``: ``_mapping(values, th)`` when the caller has it already (render fills several templates
    with the same values)."""
    text = prefix + (template.format_map(mapping).strip() if mapping is not None else fill(template, values, th))
    if len(text) <= MAX_SUMMARY:  # the usual case: nothing to shorten
        return text
    values = dict(values)
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


def md_escape(text: Any) -> str:
    """EHR-supplied text made literal before it goes into a card (the one rule: :mod:`cds_service.clinical.markup`)."""
    return markup.text(text)


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
                   label: str, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    rtype = sug.get("resourceType", "MedicationRequest")
    codings = _coding(sug["code"])
    display = codings[0].get("display") or label
    subject = {"reference": facts.patient_ref}
    if rtype == "ServiceRequest":
        return {"resourceType": "ServiceRequest", "id": models.new_uuid(), "status": "draft", "intent": "order",
                "code": {"coding": codings, "text": display}, "subject": subject}
    if sug["code"].get("system") == "ivig":
        display = "Immune globulin G (human), intravenous (IVIG)"
    dosage: dict[str, Any] = {"text": label}
    route = sug.get("route")
    if route in _ROUTES:
        code, disp = _ROUTES[route]
        dosage["route"] = {"coding": [{"system": SYSTEM_URI["SNOMED"], "code": code, "display": disp}]}
    if mapping is None:
        mapping = _mapping(values, th)
    timing = sug.get("timing")
    if isinstance(timing, dict):
        rep = {}
        for k, v in timing.items():
            rep[k] = _num(v.format_map(mapping).strip()) if isinstance(v, str) and "{" in v else v
        dosage["timing"] = {"repeat": rep}
    dose = sug.get("dose")
    if isinstance(dose, dict):
        unit = dose.get("unit", "mg")
        dosage["doseAndRate"] = [{"doseQuantity": {"value": _num(str(dose["value"]).format_map(mapping).strip()),
                                                    "unit": unit, "system": UCUM, "code": unit}}]
    return {
        "resourceType": "MedicationRequest",
        "id": models.new_uuid(),
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": codings, "text": display},
        "subject": subject,
        "dosageInstruction": [dosage],
    }


# ------------------------------------------------------------------------------------------- cards
# The source and override reasons of a card come from the card texts, the same for every request: they
# are validated once (keyed by their content) and the validated models are shared by the cards, which
# pydantic accepts without validating them again. Nothing mutates a card after rendering.
@functools.lru_cache(maxsize=64)
def _source_model(label: str, url: str) -> models.Source:
    return models.Source.model_validate({"label": label, "url": url})


@functools.lru_cache(maxsize=64)
def _override_models(system: str, reasons: tuple[tuple[str, str], ...]) -> tuple[models.OverrideReason, ...]:
    return tuple(models.OverrideReason.model_validate({"code": code, "system": system, "display": display})
                 for code, display in reasons)


def render(fired: Fired, facts: Facts, th: Thresholds, *, _view: _ThresholdView | None = None) -> models.Card:
    lib = card_library()
    spec = spec_for(fired.rule_id)  # read only; copied below before a variant is merged in
    if fired.variant:
        spec = dict(spec)
        variant = (spec.get("variants") or {}).get(fired.variant)
        if variant is None:
            raise CardSpecError(f"{fired.rule_id}: no variant {fired.variant!r}")
        spec.update(variant)
    values = dict(fired.values)
    values.setdefault("ns_status", facts.ns_status)
    mapping = _mapping(values, th, _view)  # one mapping for every template of this card (values do not change)
    cond = lib["_conditional"]
    prefix = cond["summary_prefix"] if fired.conditional else ""
    summary = fit_summary(spec["summary"], values, th, prefix, mapping)

    evidence = spec["evidence"]
    src = lib["_sources"][spec.get("source") or evidence["source"]]
    parts: list[str] = []
    if fired.conditional:
        parts.append(cond["detail"].format_map(mapping).strip())
    parts.append(spec.get("detail", "").format_map(mapping).strip())
    parts.append(f"**{lib.get('_evidence_heading', 'Evidence level')}:** {evidence['level']}. "
                 f"Source: {src['citation']}.")
    if fired.facts:
        lines = [f"**{lib.get('_facts_heading', 'Facts used')}**", ""]
        for fr in fired.facts:
            ref = f" ({markup.code(fr.reference)})" if fr.reference else ""
            lines.append(f"- {md_escape(fr.fact)}: {md_escape(fr.value)}{ref}")
        parts.append("\n".join(lines))
    detail = "\n\n".join(p for p in parts if p)

    # The card is validated once as a whole (one pydantic call instead of one per nested object).
    suggestions = []
    for sug in spec.get("suggestions") or ():
        if sug.get("key") not in fired.suggestions:
            continue
        label = sug["label"].format_map(mapping).strip()
        resource = build_resource(sug, values, facts, th, label, mapping)
        suggestions.append({"label": label, "uuid": models.new_uuid(),
                            "actions": [{"type": "create", "description": label, "resource": resource}]})

    indicator = spec["indicator"]
    override = None
    if indicator in ("warning", "critical"):
        ors = lib["_override_reasons"]
        system = ors["system"]
        override = list(_override_models(system, tuple(
            (r["code"], r["display"]) for r in ors["sets"][spec.get("override_reasons") or "default"])))
    links = [{"label": lk["label"], "url": lk["url"], "type": "absolute"} for lk in spec.get("links") or ()]
    extension = {
        models.RULE_ID_EXTENSION: fired.rule_id,
        models.EVIDENCE_EXTENSION: {"level": evidence["level"], "citation": src["citation"], "url": src["url"]},
        models.FACTS_EXTENSION: [fr.as_dict() for fr in fired.facts],
    }
    return models.Card.model_validate({
        "uuid": models.new_uuid(),
        "summary": summary,
        "detail": detail,
        "indicator": indicator,
        "source": _source_model(src["label"], src["url"]),
        "suggestions": suggestions or None,
        "selectionBehavior": "any" if suggestions else None,
        "overrideReasons": override,
        "links": links or None,
        "extension": extension,
    })


def render_all(fired: list[Fired], facts: Facts, th: Thresholds) -> list[models.Card]:
    view = _ThresholdView(th)  # shared by this call's cards: each threshold is formatted once
    cards = [render(f, facts, th, _view=view) for f in fired]
    cards.sort(key=lambda c: models.INDICATOR_RANK[c.indicator])  # stable: rule order within a rank
    return cards


def rule_id_of(card: models.Card) -> str:
    return str((card.extension or {}).get(models.RULE_ID_EXTENSION))


__all__ = ["render", "render_all", "card_library", "fill", "fit_summary", "FactRef", "rule_id_of"]
