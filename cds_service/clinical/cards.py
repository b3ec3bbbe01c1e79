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
from dataclasses import dataclass
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
    if mapping is None:
        mapping = _mapping(values, th)
    text = prefix + template.format_map(mapping).strip()
    if len(text) <= MAX_SUMMARY:  # the usual case: nothing to shorten
        return text
    values, mapping = dict(values), dict(mapping)
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
        mapping[k] = ", ".join(md_escape(x) for x in values[k])  # as _mapping makes a list
        text = prefix + template.format_map(mapping).strip()
    if len(text) > MAX_SUMMARY:
        text = text[: MAX_SUMMARY - 1].rstrip() + "…"
    return text


def md_escape(text: Any) -> str:
    """EHR-supplied text made literal before it goes into a card (the one rule: :mod:`cds_service.clinical.markup`)."""
    return markup.text(text)


# ------------------------------------------------------------------------------------------- templates, compiled
# A card text (its spec merged with the variant fired) is compiled once into a CardTemplate: every part that
# does not depend on the request (indicator, source, override reasons, links, the evidence paragraph and
# extension, the codings, route and fixed timing of each suggested resource) is built as the response's
# JSON then and shared by the cards rendered from it; rendering fills the templates' placeholders with the
# escaped values. Shared parts are never changed in place (a card that adds a link replaces its list).


@dataclass(frozen=True, slots=True)
class SuggestionTemplate:
    """One suggestion of a card text: a ``create`` action with a draft resource."""

    key: str  # what a rule names in ``Fired.suggestions``
    label: str  # template
    service_request: bool  # a ServiceRequest (a test); else a MedicationRequest
    ivig: bool  # coded with the site's IVIG RxNorm codes (read at rendering: sites add codes)
    codings: tuple[dict[str, str], ...]  # the codings of any other product or test
    text: str  # the concept's text ("" for a test without a display: the label is used)
    route: dict[str, Any] | None
    timing: tuple[tuple[str, Any, bool], ...] | None  # (key, value, value is a template)
    dose_value: str | None  # template of the dose quantity's value
    dose_unit: str


@dataclass(frozen=True, slots=True)
class CardTemplate:
    """One card text (rule, variant) ready to render."""

    rule_id: str
    indicator: str
    summary: str  # template
    detail: str  # template
    conditional_prefix: str  # before the summary when neurosarcoidosis is not confirmed (A16)
    conditional_detail: str  # template, first paragraph of the detail then
    evidence_paragraph: str
    facts_heading: str
    source: dict[str, str]
    evidence: dict[str, Any]  # extension[EVIDENCE_EXTENSION]
    override_reasons: tuple[dict[str, str], ...] | None
    links: tuple[dict[str, str], ...] | None
    suggestions: tuple[SuggestionTemplate, ...]


def _merged_spec(rule_id: str, variant: str | None) -> dict[str, Any]:
    spec = spec_for(rule_id)
    if variant:
        spec = dict(spec)
        merged = (spec.get("variants") or {}).get(variant)
        if merged is None:
            raise CardSpecError(f"{rule_id}: no variant {variant!r}")
        spec.update(merged)
    return spec


def _suggestion_template(sug: dict[str, Any]) -> SuggestionTemplate:
    code = sug["code"]
    ivig = code.get("system") == "ivig"
    codings = () if ivig else ({"system": _SYSTEMS[code["system"]], "code": str(code["code"]),
                                "display": str(code.get("display", ""))},)
    service_request = sug.get("resourceType", "MedicationRequest") == "ServiceRequest"
    route = None
    if sug.get("route") in _ROUTES:
        rcode, rdisplay = _ROUTES[sug["route"]]
        route = {"coding": [{"system": SYSTEM_URI["SNOMED"], "code": rcode, "display": rdisplay}]}
    timing = sug.get("timing")
    dose = sug.get("dose")
    if ivig:
        text = "" if service_request else "Immune globulin G (human), intravenous (IVIG)"
    else:
        text = codings[0]["display"]
    return SuggestionTemplate(
        key=sug.get("key"), label=sug["label"], service_request=service_request, ivig=ivig, codings=codings,
        text=text, route=route,
        timing=tuple((k, v, isinstance(v, str) and "{" in v) for k, v in timing.items())
        if isinstance(timing, dict) else None,
        dose_value=str(dose["value"]) if isinstance(dose, dict) else None,
        dose_unit=dose.get("unit", "mg") if isinstance(dose, dict) else "mg")


def compile_card(rule_id: str, variant: str | None = None) -> CardTemplate:
    """The card text of ``rule_id`` (with ``variant`` merged in) compiled for rendering."""
    lib = card_library()
    spec = _merged_spec(rule_id, variant)
    evidence = spec["evidence"]
    src = lib["_sources"][spec.get("source") or evidence["source"]]
    indicator = spec["indicator"]
    override = None
    if indicator in ("warning", "critical"):
        ors = lib["_override_reasons"]
        override = tuple({"code": r["code"], "system": ors["system"], "display": r["display"]}
                         for r in ors["sets"][spec.get("override_reasons") or "default"])
    links = tuple({"label": lk["label"], "url": lk["url"], "type": "absolute"} for lk in spec.get("links") or ())
    source = {"label": src["label"], "url": src["url"]} if src.get("url") else {"label": src["label"]}
    cond = lib["_conditional"]
    return CardTemplate(
        rule_id=rule_id, indicator=indicator, summary=spec["summary"], detail=spec.get("detail", ""),
        conditional_prefix=cond["summary_prefix"], conditional_detail=cond["detail"],
        evidence_paragraph=f"**{lib.get('_evidence_heading', 'Evidence level')}:** {evidence['level']}. "
                           f"Source: {src['citation']}.",
        facts_heading=f"**{lib.get('_facts_heading', 'Facts used')}**\n\n",
        source=source, evidence={"level": evidence["level"], "citation": src["citation"], "url": src["url"]},
        override_reasons=override, links=links or None,
        suggestions=tuple(_suggestion_template(s) for s in spec.get("suggestions") or ()))


class _Templates:
    """The compiled card texts, made again when the card library is loaded again."""

    def __init__(self) -> None:
        self.library: dict[str, Any] | None = None
        self.compiled: dict[tuple[str, str | None], CardTemplate] = {}

    def get(self, rule_id: str, variant: str | None) -> CardTemplate:
        lib = card_library()
        if lib is not self.library:
            self.library, self.compiled = lib, {}
        key = (rule_id, variant)
        template = self.compiled.get(key)
        if template is None:
            template = self.compiled[key] = compile_card(rule_id, variant)
        return template


_TEMPLATES = _Templates()


def compile_all() -> int:
    """Compile every card text and variant (the engine's warm-up); returns how many."""
    n = 0
    for rule_id, spec in card_library().items():
        if rule_id.startswith("_") or not isinstance(spec, dict) or "summary" not in spec:
            continue
        for variant in (None, *(spec.get("variants") or ())):
            _TEMPLATES.get(rule_id, variant)
            n += 1
    return n


@functools.lru_cache(maxsize=8)
def _ivig_codings(rxnorm: frozenset[str]) -> tuple[dict[str, str], ...]:
    codings = [{"system": _SYSTEMS["rxnorm"], "code": c, "display": "immune globulin G (human), intravenous"}
               for c in sorted(rxnorm)]
    codings.append({"system": SYSTEM_URI["ATC"], "code": "J06BA02",
                    "display": "immunoglobulins, normal human, for intravascular adm."})
    return tuple(codings)


def _num(value: str) -> float | int:
    v = float(str(value).replace(",", ""))
    return int(v) if v.is_integer() else v


def _resource(st: SuggestionTemplate, label: str, patient_ref: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """The draft resource of a suggestion (decision 16: RxNorm or LOINC coded, the label as its dosage text)."""
    codings = _ivig_codings(frozenset(get_terminology().ivig_rxnorm)) if st.ivig else st.codings
    subject = {"reference": patient_ref}
    if st.service_request:
        return {"resourceType": "ServiceRequest", "id": models.new_uuid(), "status": "draft", "intent": "order",
                "code": {"coding": codings, "text": st.text or codings[0].get("display") or label},
                "subject": subject}
    dosage: dict[str, Any] = {"text": label}
    if st.route is not None:
        dosage["route"] = st.route
    if st.timing is not None:
        dosage["timing"] = {"repeat": {k: _num(v.format_map(mapping).strip()) if templated else v
                                       for k, v, templated in st.timing}}
    if st.dose_value is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": _num(st.dose_value.format_map(mapping).strip()),
                                                    "unit": st.dose_unit, "system": UCUM, "code": st.dose_unit}}]
    return {
        "resourceType": "MedicationRequest",
        "id": models.new_uuid(),
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": codings, "text": st.text or label},
        "subject": subject,
        "dosageInstruction": [dosage],
    }


# ------------------------------------------------------------------------------------------- cards
def _fact_line(fr: FactRef) -> str:
    ref = f" ({markup.code(fr.reference)})" if fr.reference else ""
    return f"- {markup.text(fr.fact)}: {markup.text(fr.value)}{ref}"


def render(fired: Fired, facts: Facts, th: Thresholds, *, _view: _ThresholdView | None = None) -> models.WireCard:
    tpl = _TEMPLATES.get(fired.rule_id, fired.variant)
    values = dict(fired.values)
    values.setdefault("ns_status", facts.ns_status)
    mapping = _mapping(values, th, _view)  # one mapping for every template of this card (values do not change)
    summary = fit_summary(tpl.summary, values, th, tpl.conditional_prefix if fired.conditional else "", mapping)

    parts: list[str] = []
    if fired.conditional:
        parts.append(tpl.conditional_detail.format_map(mapping).strip())
    parts.append(tpl.detail.format_map(mapping).strip())
    parts.append(tpl.evidence_paragraph)
    if fired.facts:
        parts.append(tpl.facts_heading + "\n".join([_fact_line(fr) for fr in fired.facts]))
    detail = "\n\n".join([p for p in parts if p])

    suggestions = []
    if fired.suggestions:
        for st in tpl.suggestions:
            if st.key not in fired.suggestions:
                continue
            label = st.label.format_map(mapping).strip()
            resource = _resource(st, label, facts.patient_ref, mapping)
            suggestions.append({"label": label, "uuid": models.new_uuid(),
                                "actions": [{"type": "create", "description": label, "resource": resource}]})
    return models.WireCard(
        summary=summary, detail=detail, indicator=tpl.indicator, source=tpl.source,
        suggestions=suggestions or None, selectionBehavior="any" if suggestions else None,
        overrideReasons=tpl.override_reasons, links=tpl.links,
        extension={models.RULE_ID_EXTENSION: fired.rule_id, models.EVIDENCE_EXTENSION: tpl.evidence,
                   models.FACTS_EXTENSION: [fr.as_dict() for fr in fired.facts]},
        uuid=models.new_uuid())


def render_all(fired: list[Fired], facts: Facts, th: Thresholds) -> list[models.WireCard]:
    view = _ThresholdView(th)  # shared by this call's cards: each threshold is formatted once
    cards = [render(f, facts, th, _view=view) for f in fired]
    cards.sort(key=lambda c: models.INDICATOR_RANK[c.indicator])  # stable: rule order within a rank
    return cards


def rule_id_of(card: models.Card | models.WireCard) -> str:
    return str((card.extension or {}).get(models.RULE_ID_EXTENSION))


__all__ = ["render", "render_all", "card_library", "fill", "fit_summary", "FactRef", "rule_id_of"]
