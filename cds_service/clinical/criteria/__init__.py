"""Clinical criteria as data: the YAML files beside this module, loaded once.

``risk_factors.yaml``      value-set category -> risk factor (which fact list, inactive records or not)
``contraindications.yaml`` condition -> ladder drugs withheld
``ladder_steps.yaml``      stage -> its next standard step and that step's options
``value_sets.yaml``        the value-set categories (codes and code prefixes) the readers match
``immune_globulin.yaml``   immune globulin products (strengths, routes), reaction severity, anticoagulants,
                           local estrogen, thrombosis history codes (decisions 34-38)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


def _load(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    # libyaml's safe loader when PyYAML has it: the same documents, quicker start-up
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclass(frozen=True)
class RiskFactor:
    categories: tuple[str, ...]
    feeds: str
    label: str
    key: str = ""
    when_inactive: bool = False
    also: str = ""
    cards: tuple[str, ...] = ()
    active_as: tuple[str, str] | None = None  # (key, label) when the record is still active (decision 38)


@dataclass(frozen=True)
class Contraindication:
    key: str
    label: str
    affects: str
    withholds: tuple[str, ...]
    category: str = ""


def _as_tuple(x: Any) -> tuple[str, ...]:
    return tuple(x) if isinstance(x, list) else (x,)


@functools.cache
def risk_factors() -> tuple[RiskFactor, ...]:
    out = []
    for e in _load("risk_factors.yaml")["risk_factors"]:
        active = e.get("active_as")
        out.append(RiskFactor(_as_tuple(e["category"]), e["feeds"], e["label"], e.get("key", ""),
                              bool(e["when_inactive"]), e.get("also", ""), tuple(e.get("cards", ())),
                              (active["key"], active["label"]) if active else None))
    return tuple(out)


@functools.cache
def risk_factor_index() -> dict[str, tuple[int, ...]]:
    """Category -> positions in :func:`risk_factors` of the factors it gives."""
    index: dict[str, list[int]] = {}
    for i, rf in enumerate(risk_factors()):
        for cat in rf.categories:
            index.setdefault(cat, []).append(i)
    return {cat: tuple(ix) for cat, ix in index.items()}


@functools.cache
def contraindication_categories() -> dict[str, tuple[Contraindication, ...]]:
    """Category -> the contraindications it records (file order)."""
    out: dict[str, list[Contraindication]] = {}
    for c in contraindications():
        out.setdefault(c.category, []).append(c)
    return {cat: tuple(cs) for cat, cs in out.items()}


@functools.cache
def derived_factors() -> dict[str, dict[str, str]]:
    return dict(_load("risk_factors.yaml")["derived_factors"])


@functools.cache
def contraindications() -> tuple[Contraindication, ...]:
    return tuple(Contraindication(e["key"], e["label"], e["affects"], tuple(e["withholds"]), e["category"])
                 for e in _load("contraindications.yaml")["contraindications"])


@functools.cache
def derived_contraindications() -> dict[str, Contraindication]:
    return {name: Contraindication(e["key"], e["label"], e["affects"], tuple(e["withholds"]))
            for name, e in _load("contraindications.yaml")["derived"].items()}


def withholding(names: frozenset[str]) -> frozenset[str]:
    """Keys of the contraindications whose ``withholds`` name any of ``names`` (a drug and its class),
    decision 39."""
    every = (*contraindications(), *derived_contraindications().values())
    return frozenset(c.key for c in every if names & set(c.withholds))


@functools.cache
def ladder_steps() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(stage -> class of its next standard step, class -> the options of that step), decision 39."""
    data = _load("ladder_steps.yaml")
    return dict(data["next_step"]), {k: tuple(v) for k, v in data["step_options"].items()}


@functools.cache
def value_sets() -> dict[str, list[tuple[str, str, bool]]]:
    """Category -> [(system, code or prefix, is_prefix)], in file order."""
    data = _load("value_sets.yaml")
    systems: dict[str, str] = data["systems"]
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for name, entry in data["categories"].items():
        codes: list[tuple[str, str, bool]] = []
        for item in entry:
            ((kind, values),) = item.items()
            system, is_prefix = systems[kind.removesuffix("-prefix")], kind.endswith("-prefix")
            codes += [(system, str(v), is_prefix) for v in values]
        out[name] = codes
    return out


@functools.cache
def immune_globulin() -> dict[str, Any]:
    """``immune_globulin.yaml``: the product and reaction lists of the IVIG cards (decisions 34-38)."""
    doc = _load("immune_globulin.yaml")
    if not isinstance(doc, dict) or not isinstance(doc.get("brands"), dict):
        raise ValueError("criteria/immune_globulin.yaml: a mapping with 'brands' is required")
    return doc
