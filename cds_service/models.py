"""CDS Hooks 2.0.1 wire models: discovery, request, response (cards) and feedback.

Written from the 2.0.1 tables (there is no official JSON Schema). Two rules shape every model:

* Responses never carry ``null`` or empty optional fields (spec "Use of JSON"), so serialise with
  :func:`dump` (``exclude_none``) and let the validators turn empty lists into ``None``.
* Requests come from real clients that bend the spec (sandbox, Epic); request models are lenient
  (``extra="allow"``) and only insist on what the spec makes REQUIRED.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Indicator = Literal["info", "warning", "critical"]
SelectionBehavior = Literal["at-most-one", "any"]
ActionType = Literal["create", "update", "delete"]
LinkType = Literal["absolute", "smart"]

INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}

# Keys this service puts in a card's `extension` (reverse-domain style, as the spec asks).
RULE_ID_EXTENSION = "org.neurosarcoidosis-cds.rule-id"  # stable id: feedback is analysed per rule
EVIDENCE_EXTENSION = "org.neurosarcoidosis-cds.evidence"  # {"level": ..., "citation": ..., "url": ...}
FACTS_EXTENSION = "org.neurosarcoidosis-cds.facts"  # [{"fact": ..., "value": ..., "reference": "Type/id"}]
# Request extension, development only (ignored when authentication is on): pins "now" for fixtures.
EVALUATION_TIME_EXTENSION = "org.neurosarcoidosis-cds.evaluation-time"


def new_uuid() -> str:
    """A version-7 UUID (RFC 9562): 48 bits of Unix time in milliseconds, then random bits (74 of them).

    Time-ordered on purpose: the card uuid is the audit table's primary key, and keys that grow with time
    are appended at the right edge of the index, where random version-4 keys each land on a random page, so
    an insert costs the same however large the table grows. Unique without coordination between workers;
    the spec only asks for a UUID.
    """
    r = os.urandom(10)
    # bytes 0-5: the time; byte 6: version 7 in its high nibble; byte 8: the RFC 9562 variant (10) in its two high
    # bits; the rest random. Built as bytes, which takes half the time of the same bits as one big integer.
    h = ((time.time_ns() // 1_000_000).to_bytes(6, "big") + bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F)))
         + r[3:]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Out(BaseModel):
    """Base for response objects: strict about unknown fields so a typo cannot reach an EHR."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:
        # The spec forbids "", [] and {} for optional fields; treat them as absent.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v not in ("", [], {}) or k == "cards"}
        return data


# --------------------------------------------------------------------------- data types
class Coding(_Out):
    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    display: str | None = None


class OverrideReason(Coding):
    """A Coding whose ``display`` is REQUIRED (spec: overrideReasons)."""

    display: str = Field(min_length=1)


class Source(_Out):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Link(_Out):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: LinkType = "absolute"
    appContext: str | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_for_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links")
        return self


class Action(_Out):
    type: ActionType
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _resource_for_create_update(self) -> Action:
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action needs a resource")
        return self


class Suggestion(_Out):
    label: str = Field(min_length=1)
    uuid: str = Field(default_factory=new_uuid)
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Card(_Out):
    uuid: str = Field(default_factory=new_uuid)
    summary: str = Field(min_length=1, max_length=139)  # spec: "<140 characters"
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: SelectionBehavior | None = None
    overrideReasons: list[OverrideReason] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selection_behavior_with_suggestions(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        if not self.suggestions and self.selectionBehavior is not None:
            self.selectionBehavior = None
        return self


class CDSResponse(_Out):
    cards: list[Card] = Field(default_factory=list)
    systemActions: list[Action] | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialise a response model the way the spec wants it: no nulls, no empties."""
    return model.model_dump(mode="json", exclude_none=True)


class WireCard(msgspec.Struct, kw_only=True):
    """A card as the request path carries it: the fields of :class:`Card`, its nested objects as the plain
    JSON of the response (dicts in the key order ``dump`` gives), built without validation.

    :meth:`wire` gives what ``dump(Card(...))`` gives for the same card; tests/test_wire_cards.py validates
    every card of every fixture and benchmark request against :class:`CDSResponse`, so the two cannot drift.
    Nested objects may be shared with the card templates: replace them, never change them in place."""

    uuid: str
    summary: str
    detail: str | None = None
    indicator: str
    source: dict[str, Any]
    suggestions: list[dict[str, Any]] | None = None
    selectionBehavior: str | None = None
    overrideReasons: list[dict[str, Any]] | tuple[dict[str, Any], ...] | None = None
    links: list[dict[str, Any]] | tuple[dict[str, Any], ...] | None = None
    extension: dict[str, Any] | None = None

    @classmethod
    def of(cls, card: Card) -> WireCard:
        """A validated :class:`Card` as a wire card."""
        return cls(**dump(card))

    def wire(self) -> dict[str, Any]:
        """The card's JSON object: no nulls, no empties (as :func:`dump`)."""
        out: dict[str, Any] = {"uuid": self.uuid, "summary": self.summary}
        if self.detail:
            out["detail"] = self.detail
        out["indicator"] = self.indicator
        out["source"] = self.source
        if self.suggestions:
            out["suggestions"] = self.suggestions
            if self.selectionBehavior:
                out["selectionBehavior"] = self.selectionBehavior
        if self.overrideReasons:
            out["overrideReasons"] = self.overrideReasons
        if self.links:
            out["links"] = self.links
        if self.extension:
            out["extension"] = self.extension
        return out

    def validated(self) -> Card:
        """The card as the wire model (validated): for tests and the rare reader that wants models."""
        return Card.model_validate(self.wire())


def encode_response(cards: list[WireCard]) -> bytes:
    """The encoded CDS Hooks response holding ``cards``: the bytes ``orjson.dumps(dump(CDSResponse(cards=...)))``
    gives for the same cards."""
    return orjson.dumps({"cards": [c.wire() for c in cards]})


# --------------------------------------------------------------------------- discovery
class ServiceDefinition(_Out):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    extension: dict[str, Any] | None = None


class DiscoveryResponse(_Out):
    services: list[ServiceDefinition] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:  # {"services": []} is explicitly allowed
        return data


# --------------------------------------------------------------------------- request
class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None

    def __repr__(self) -> str:  # never let the token reach a log line through repr()
        return "FhirAuthorization(access_token='***')"

    __str__ = __repr__


class HookRequestBody(BaseModel):
    """The top level of a CDS Hooks call. ``context`` is checked per hook in :mod:`cds_service.hooks`."""

    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fhir_server_with_token(self) -> HookRequestBody:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is sent")
        return self

    @field_validator("fhirServer")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("fhirServer must be an http(s) URL")
        return v


# --------------------------------------------------------------------------- feedback
# Feedback fields are stored as sent, so their lengths are checked here (a 400 names the field), never cut.
MAX_ID = 64  # card and suggestion uuids are 36 characters; the store keeps 64
MAX_CODE, MAX_SYSTEM, MAX_DISPLAY, MAX_COMMENT = 200, 500, 500, 2000


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=MAX_ID)


class FeedbackCoding(BaseModel):
    """Feedback codings come without ``display`` from the sandbox: accept that."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(min_length=1, max_length=MAX_CODE)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM)
    display: str | None = Field(default=None, max_length=MAX_DISPLAY)


class OverrideReasonFeedback(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: FeedbackCoding | None = None
    userComment: str | None = Field(default=None, max_length=MAX_COMMENT)
    extension: dict[str, Any] | None = None  # Epic puts its reason here instead of `reason`


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    card: str = Field(min_length=1, max_length=MAX_ID)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReasonFeedback | None = None
    outcomeTimestamp: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _epic_plural(cls, data: Any) -> Any:
        # Epic documents `overrideReasons` (plural, an object) where the spec says `overrideReason`.
        if isinstance(data, dict) and "overrideReason" not in data and "overrideReasons" in data:
            data = dict(data)
            value = data.pop("overrideReasons")
            if isinstance(value, list):  # tolerate a one-element list
                value = value[0] if value else None
            data["overrideReason"] = value
        return data

    @model_validator(mode="after")
    def _accepted_has_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome needs acceptedSuggestions")
        return self

    @field_validator("outcomeTimestamp")
    @classmethod
    def _rfc3339(cls, v: str) -> str:
        from cds_service.rfc3339 import parse_instant

        try:
            parse_instant(v)
        except ValueError as exc:
            raise ValueError(f"outcomeTimestamp {exc}") from None
        return v

    @model_validator(mode="after")
    def _reason_lengths(self) -> FeedbackItem:
        code, display = self.reason_code()  # Epic's extension is free-form: the same limits apply
        if code is not None and len(code) > MAX_CODE:
            raise ValueError(f"the override reason code is longer than {MAX_CODE} characters")
        if display is not None and (not isinstance(display, str) or len(display) > MAX_DISPLAY):
            raise ValueError(f"the override reason display must be text of at most {MAX_DISPLAY} characters")
        return self

    def reason_code(self) -> tuple[str | None, str | None]:
        """(code, display) of the override reason, from the spec shape or Epic's extension."""
        r = self.overrideReason
        if r is None:
            return None, None
        if r.reason is not None:
            return r.reason.code, r.reason.display
        ext = r.extension or {}
        code = ext.get("com.epic.cdshooks.feedback.overrideReason.reasonCategory")
        display = ext.get("com.epic.cdshooks.feedback.overrideReason.reasonDisplay") or ext.get(
            "com.epic.cdshooks.feedback.overrideReason.reasonTitle"
        )
        return (str(code) if code is not None else None), display


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=500)
