"""A fast, strict check of the fields the rules read, in front of the full ``fhir.resources`` validation.

Each resource that is about to become a fact is validated on a projection (the fields the rules read, plus
stubs for required fields they do not read). :func:`plainly_valid` checks that projection against msgspec
Structs that describe the same FHIR R4 datatypes *more strictly* than ``fhir.resources`` does: no unknown
or extension elements, no coercion (a number is a number, a date a calendar date in one of four spellings),
every required element present, at most one element of each choice ``[x]``. So a projection it accepts is
valid FHIR for ``fhir.resources`` as well; one it does not accept is not necessarily invalid, and goes to
``fhir.resources``, which decides (and says what is wrong). The common case, well-formed EHR data, is
checked in compiled code and never loads the ``fhir.resources`` models; the rare case costs what it always did.

tests/test_shapes.py checks the one-way promise (accepted here => accepted by ``fhir.resources``) on
every fixture and Synthea resource and on many mutations of them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

# ----------------------------------------------------------------------------- primitives (strict subsets)
# FHIR string: one or more characters, whitespace only as space, CR, LF or tab.
String = Annotated[str, Meta(pattern=r"^[ \r\n\t\S]+$")]
# FHIR code: tokens separated by single spaces.
Code = Annotated[str, Meta(pattern=r"^[^\s]+( [^\s]+)*$")]
Uri = Annotated[str, Meta(pattern=r"^\S+$")]
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
Decimal = Annotated[float, Meta(ge=-1e300, le=1e300)] | Annotated[int, Meta(ge=-(10**18), le=10**18)]
PositiveInt = Annotated[int, Meta(ge=1, le=2_147_483_647)]
UnsignedInt = Annotated[int, Meta(ge=0, le=2_147_483_647)]

# Calendar dates whose validity a pattern can see: days 29-31 only in months that always have them (a 29th
# of February goes to fhir.resources).
_YEAR = r"[1-9][0-9]{3}"
_MONTH_DAY = (r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
              r"|(?:0[13-9]|1[0-2])-(?:29|30)"
              r"|(?:0[13578]|1[02])-31)")
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])"
Date = Annotated[str, Meta(pattern=rf"^{_YEAR}(?:-(?:0[1-9]|1[0-2])|-{_MONTH_DAY})?$")]
DateTime = Annotated[str, Meta(pattern=rf"^{_YEAR}(?:-(?:0[1-9]|1[0-2])|-{_MONTH_DAY}(?:T{_TIME})?)?$")]
Instant = Annotated[str, Meta(pattern=rf"^{_YEAR}-{_MONTH_DAY}T{_TIME}$")]
Time = Annotated[str, Meta(pattern=r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$")]


class _Element(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    def __post_init__(self) -> None:
        for group in getattr(self, "_choices", ()):
            if sum(getattr(self, name) is not None for name in group) > 1:
                raise ValueError(f"more than one of {', '.join(group)}")


# ----------------------------------------------------------------------------- datatypes
class Coding(_Element):
    system: Uri | None = None
    version: String | None = None
    code: Code | None = None
    display: String | None = None
    userSelected: bool | None = None


class CodeableConcept(_Element):
    coding: list[Coding] | None = None
    text: String | None = None


class Quantity(_Element):
    value: Decimal | None = None
    comparator: Annotated[str, Meta(pattern=r"^(<|<=|>=|>)$")] | None = None
    unit: String | None = None
    system: Uri | None = None
    code: Code | None = None


class SimpleQuantity(_Element):
    value: Decimal | None = None
    unit: String | None = None
    system: Uri | None = None
    code: Code | None = None


class Range(_Element):
    low: SimpleQuantity | None = None
    high: SimpleQuantity | None = None


class Ratio(_Element):
    numerator: Quantity | None = None
    denominator: Quantity | None = None


class Period(_Element):
    start: DateTime | None = None
    end: DateTime | None = None


class Reference(_Element):
    reference: String | None = None
    type: Uri | None = None
    display: String | None = None


class Annotation(_Element):
    text: String
    authorString: String | None = None
    time: DateTime | None = None


class TimingRepeat(_Element):
    boundsDuration: Quantity | None = None
    boundsRange: Range | None = None
    boundsPeriod: Period | None = None
    count: PositiveInt | None = None
    countMax: PositiveInt | None = None
    duration: Decimal | None = None
    durationMax: Decimal | None = None
    durationUnit: Code | None = None
    frequency: PositiveInt | None = None
    frequencyMax: PositiveInt | None = None
    period: Decimal | None = None
    periodMax: Decimal | None = None
    periodUnit: Code | None = None
    dayOfWeek: list[Code] | None = None
    timeOfDay: list[Time] | None = None
    when: list[Code] | None = None
    offset: UnsignedInt | None = None
    _choices = (("boundsDuration", "boundsRange", "boundsPeriod"),)


class Timing(_Element):
    event: list[DateTime] | None = None
    repeat: TimingRepeat | None = None
    code: CodeableConcept | None = None


class DoseAndRate(_Element):
    type: CodeableConcept | None = None
    doseRange: Range | None = None
    doseQuantity: SimpleQuantity | None = None
    rateRatio: Ratio | None = None
    rateRange: Range | None = None
    rateQuantity: SimpleQuantity | None = None
    _choices = (("doseRange", "doseQuantity"), ("rateRatio", "rateRange", "rateQuantity"))


class Dosage(_Element):
    sequence: Annotated[int, Meta(ge=-2_147_483_648, le=2_147_483_647)] | None = None
    text: String | None = None
    additionalInstruction: list[CodeableConcept] | None = None
    patientInstruction: String | None = None
    timing: Timing | None = None
    asNeededBoolean: bool | None = None
    asNeededCodeableConcept: CodeableConcept | None = None
    site: CodeableConcept | None = None
    route: CodeableConcept | None = None
    method: CodeableConcept | None = None
    doseAndRate: list[DoseAndRate] | None = None
    maxDosePerPeriod: Ratio | None = None
    maxDosePerAdministration: SimpleQuantity | None = None
    maxDosePerLifetime: SimpleQuantity | None = None
    _choices = (("asNeededBoolean", "asNeededCodeableConcept"),)


# ----------------------------------------------------------------------------- the projections
class _Resource(_Element, tag_field="resourceType"):
    id: Id | None = None


class ConditionEvidence(_Element):
    code: list[CodeableConcept] | None = None
    detail: list[Reference] | None = None


class Condition(_Resource, tag="Condition", kw_only=True):
    subject: Reference
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    code: CodeableConcept | None = None
    bodySite: list[CodeableConcept] | None = None
    onsetDateTime: DateTime | None = None
    onsetPeriod: Period | None = None
    recordedDate: DateTime | None = None
    abatementDateTime: DateTime | None = None
    abatementPeriod: Period | None = None
    evidence: list[ConditionEvidence] | None = None
    note: list[Annotation] | None = None
    _choices = (("onsetDateTime", "onsetPeriod"), ("abatementDateTime", "abatementPeriod"))


class ReferenceRange(_Element):
    low: SimpleQuantity | None = None
    high: SimpleQuantity | None = None
    type: CodeableConcept | None = None
    appliesTo: list[CodeableConcept] | None = None
    age: Range | None = None
    text: String | None = None


class Observation(_Resource, tag="Observation", kw_only=True):
    status: Code
    code: CodeableConcept
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: String | None = None
    interpretation: list[CodeableConcept] | None = None
    referenceRange: list[ReferenceRange] | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: Instant | None = None
    issued: Instant | None = None
    _choices = (("valueQuantity", "valueCodeableConcept", "valueString"),
                ("effectiveDateTime", "effectivePeriod", "effectiveInstant"))


class MedicationStatement(_Resource, tag="MedicationStatement", kw_only=True):
    subject: Reference
    status: Code
    medicationCodeableConcept: CodeableConcept
    statusReason: list[CodeableConcept] | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    dosage: list[Dosage] | None = None
    reasonCode: list[CodeableConcept] | None = None
    _choices = (("effectiveDateTime", "effectivePeriod"),)


class DispenseInitialFill(_Element):
    quantity: SimpleQuantity | None = None
    duration: Quantity | None = None


class DispenseRequest(_Element):
    initialFill: DispenseInitialFill | None = None
    dispenseInterval: Quantity | None = None
    validityPeriod: Period | None = None
    numberOfRepeatsAllowed: UnsignedInt | None = None
    quantity: SimpleQuantity | None = None
    expectedSupplyDuration: Quantity | None = None
    performer: Reference | None = None


class MedicationRequest(_Resource, tag="MedicationRequest", kw_only=True):
    subject: Reference
    status: Code
    intent: Code
    medicationCodeableConcept: CodeableConcept
    statusReason: CodeableConcept | None = None
    authoredOn: DateTime | None = None
    dosageInstruction: list[Dosage] | None = None
    dispenseRequest: DispenseRequest | None = None
    reasonCode: list[CodeableConcept] | None = None


class AdministrationDosage(_Element):
    text: String | None = None
    site: CodeableConcept | None = None
    route: CodeableConcept | None = None
    method: CodeableConcept | None = None
    dose: SimpleQuantity | None = None
    rateRatio: Ratio | None = None
    rateQuantity: SimpleQuantity | None = None
    _choices = (("rateRatio", "rateQuantity"),)


class MedicationAdministration(_Resource, tag="MedicationAdministration", kw_only=True):
    subject: Reference
    status: Code
    medicationCodeableConcept: CodeableConcept
    statusReason: list[CodeableConcept] | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    dosage: AdministrationDosage | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.effectiveDateTime is None) == (self.effectivePeriod is None):  # effective[x] is required
            raise ValueError("exactly one of effectiveDateTime, effectivePeriod")


class MedicationDispense(_Resource, tag="MedicationDispense", kw_only=True):
    status: Code
    medicationCodeableConcept: CodeableConcept
    whenHandedOver: DateTime | None = None
    daysSupply: SimpleQuantity | None = None
    dosageInstruction: list[Dosage] | None = None


class AllergyReaction(_Element):
    manifestation: Annotated[list[CodeableConcept], Meta(min_length=1)]
    substance: CodeableConcept | None = None
    description: String | None = None
    onset: DateTime | None = None
    severity: Code | None = None
    exposureRoute: CodeableConcept | None = None
    note: list[Annotation] | None = None


class AllergyIntolerance(_Resource, tag="AllergyIntolerance", kw_only=True):
    patient: Reference
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    code: CodeableConcept | None = None
    criticality: Code | None = None
    reaction: list[AllergyReaction] | None = None
    onsetDateTime: DateTime | None = None
    recordedDate: DateTime | None = None


class Device(_Resource, tag="Device", kw_only=True):
    status: Code | None = None
    type: CodeableConcept | None = None


class Encounter(_Resource, tag="Encounter", kw_only=True):
    status: Code
    class_: Coding = msgspec.field(name="class")
    period: Period | None = None
    reasonCode: list[CodeableConcept] | None = None


class Patient(_Resource, tag="Patient", kw_only=True):
    birthDate: Date | None = None
    gender: Code | None = None


class ServiceRequest(_Resource, tag="ServiceRequest", kw_only=True):
    subject: Reference
    status: Code
    intent: Code
    code: CodeableConcept | None = None


SHAPES: dict[str, type[_Resource]] = {cls.__struct_config__.tag: cls for cls in (  # type: ignore[misc]
    Condition, Observation, MedicationStatement, MedicationRequest, MedicationAdministration, MedicationDispense,
    AllergyIntolerance, Device, Encounter, Patient, ServiceRequest)}


def plainly_valid(rtype: str, projection: dict[str, Any]) -> bool:
    """True when the projection is certainly valid FHIR R4 (see the module docstring); False: ask
    ``fhir.resources``."""
    shape = SHAPES.get(rtype)
    if shape is None:
        return False
    try:
        msgspec.convert(projection, shape, strict=True)
    except (msgspec.ValidationError, ValueError, TypeError):
        return False
    return True
