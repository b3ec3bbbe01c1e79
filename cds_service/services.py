"""The services this CDS service offers, as data: ``cds_service/data/services.yaml`` plus a site's own file.

One :class:`Service` per entry: the hook it answers, the context that hook carries, its prefetch templates and
the rule groups it runs. Hook names live only in the data; the rest of the service asks the
:class:`Registry` (discovery, request parsing, the data sources, the preview, ``cds-service evaluate``).

A site adds services with ``CDS_EXTRA_SERVICES=/path/services.yaml`` (a ``services:`` list in the same form);
:func:`load_registry` checks the file at start-up and raises :class:`ServicesError` with one line on a mistake.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cds_service.clinical.facts.observations import LOINC_KIND
from cds_service.clinical.rules import GROUPS as RULE_GROUPS

Context = Literal["patient", "orders", "selected-orders"]

# The engine reads the hook to know whether orders are being placed; it knows the three hooks it was written
# for, so a service is evaluated as the one of them whose context it shares.
_ENGINE_HOOK: dict[str, str] = {"patient": "patient-view", "orders": "order-sign", "selected-orders": "order-select"}
_OBSERVATION_CODES_TOKEN = "{{observation-codes}}"


class ServicesError(ValueError):
    """A services file is wrong; the message is one line naming the entry and what is expected."""


def observation_codes() -> tuple[str, ...]:
    """The LOINC codes the readers classify (weight, height, creatinine, eGFR, IgA, viscosity, M-protein,
    HbA1c): the Observation prefetch asks for exactly these."""
    return tuple(LOINC_KIND)


class _ServiceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    hook: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,99}$")
    context: Context
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    rule_groups: tuple[str, ...] = Field(min_length=1)
    prefetch: tuple[str, ...] | None = None

    @field_validator("rule_groups")
    @classmethod
    def _known_groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [g for g in v if g not in RULE_GROUPS]
        if unknown:
            raise ValueError(f"rule groups among {', '.join(RULE_GROUPS)} (not {', '.join(unknown)})")
        return v


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    context: str  # "patient", "orders" or "selected-orders"
    title: str
    description: str
    rule_groups: tuple[str, ...]
    prefetch: Mapping[str, str]  # key -> template
    optional: frozenset[str]  # prefetch keys whose absence is a note, never a 412
    usage_requirements: str

    @property
    def places_orders(self) -> bool:
        return self.context != "patient"

    @property
    def has_selections(self) -> bool:
        return self.context == "selected-orders"

    @property
    def engine_hook(self) -> str:
        """The hook the clinical engine evaluates this service's calls as."""
        return _ENGINE_HOOK[self.context]


class Registry:
    """The services, by id, in the order they are listed (built-in first, then the site's)."""

    def __init__(self, services: list[Service]) -> None:
        self._by_id = {s.id: s for s in services}

    def __iter__(self) -> Iterator[Service]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, service_id: str) -> Service | None:
        return self._by_id.get(service_id)

    def __getitem__(self, service_id: str) -> Service:
        return self._by_id[service_id]

    def ids(self) -> list[str]:
        return list(self._by_id)

    @property
    def hooks(self) -> tuple[str, ...]:
        """Every hook answered, in alphabetical order."""
        return tuple(sorted({s.hook for s in self}))

    def for_hook(self, hook: str) -> Service | None:
        """The first service answering ``hook``."""
        return next((s for s in self if s.hook == hook), None)


def _read(text: str, where: str, loader: type = yaml.SafeLoader) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ServicesError(f"{where}: not valid YAML{at}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise ServicesError(f"{where}: expected a mapping with a 'services:' list")
    return data


def _services(data: dict[str, Any], where: str, base: dict[str, Any]) -> list[Service]:
    templates: dict[str, str] = base["prefetch"]
    optional = frozenset(base["optional_prefetch"])
    out = []
    for i, raw in enumerate(data["services"]):
        try:
            entry = _ServiceEntry.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ())) or "entry"
            raise ServicesError(f"{where}: services[{i}].{loc}: {err.get('msg')}") from None
        keys = entry.prefetch if entry.prefetch is not None else tuple(templates)
        unknown = [k for k in keys if k not in templates]
        if unknown:
            raise ServicesError(f"{where}: services[{i}].prefetch: keys among {', '.join(templates)} "
                                f"(not {', '.join(unknown)})")
        out.append(Service(id=entry.id, hook=entry.hook, context=entry.context, title=entry.title,
                           description=entry.description, rule_groups=entry.rule_groups,
                           prefetch={k: templates[k] for k in keys}, optional=optional & set(keys),
                           usage_requirements=base["usage_requirements"]))
    return out


@functools.cache
def _builtin() -> dict[str, Any]:
    # libyaml's safe loader when PyYAML has it: the same document, quicker start-up (a site's file keeps the
    # pure-Python loader, whose error positions the start-up message quotes)
    data = _read((resources.files("cds_service") / "data" / "services.yaml").read_text(encoding="utf-8"),
                 "cds_service/data/services.yaml", getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    codes = ",".join(f"http://loinc.org|{c}" for c in observation_codes())
    data["prefetch"] = {k: v.replace(_OBSERVATION_CODES_TOKEN, codes) for k, v in data["prefetch"].items()}
    return data


def optional_meaning() -> dict[str, str]:
    """What a clinician loses when an optional prefetch key is missing (said on the cards)."""
    return dict(_builtin()["optional_prefetch"])


@functools.cache
def load_registry(extra: Path | None = None) -> Registry:
    """The built-in services, then those of the site file ``extra``; :class:`ServicesError` on a mistake."""
    base = _builtin()
    services = _services(base, "cds_service/data/services.yaml", base)
    if extra is not None:
        try:
            text = Path(extra).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ServicesError(f"{extra}: cannot be read ({reason.lower()})") from None
        site = _services(_read(text, str(extra)), str(extra), base)
        taken = {s.id for s in services}
        for service in site:
            if service.id in taken:
                raise ServicesError(f"{extra}: service id '{service.id}' is already taken")
            taken.add(service.id)
        services += site
    return Registry(services)


def registry(settings=None) -> Registry:
    """The built-in services and, given ``settings``, the site's (``CDS_EXTRA_SERVICES``)."""
    return load_registry(settings.extra_services if settings is not None else None)
