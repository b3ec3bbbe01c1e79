"""The services this CDS service offers, and their prefetch templates.

Templates stay inside the CDS Hooks 2.0.1 rules: only ``{{context.patientId}}`` (a primitive context
field marked "Prefetch Token: Yes"), type-level searches, reference and token parameters, ``_sort`` and
``_count``. No ``today()`` (3.0 ballot only) and no nested context paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.models import DiscoveryResponse, ServiceDefinition

# LOINC codes the rules read: weight, height, BMI, creatinine, eGFR, IgA, viscosity, M-protein, HbA1c.
OBSERVATION_CODES = (
    "29463-7", "3141-9", "3142-7", "8302-2", "39156-5",
    "2160-0", "38483-4", "14682-9", "59826-8", "82810-3",
    "98979-8", "98980-6", "62238-1", "88293-6", "88294-4", "94677-2", "50210-4", "77147-7",
    "48642-3", "48643-1", "50044-7", "70969-1", "69405-9", "33914-3",
    "2458-8", "3128-6", "33358-3", "4548-4",
)

PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"http://loinc.org|{c}" for c in OBSERVATION_CODES)
    + "&_sort=-date&_count=100",
    # Optional keys (knowledge §4.3): IgA-reaction allergies, infusion-centre administrations (infliximab,
    # IVIG, IV pulses), central lines. Servers that cannot answer them must not turn every call into a 412,
    # so a failure here becomes a note on the record instead.
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "medicationAdministrations": "MedicationAdministration?patient={{context.patientId}}",
    "devices": "Device?patient={{context.patientId}}",
}
OPTIONAL_KEYS = frozenset({"allergies", "medicationAdministrations", "devices"})


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str

    def definition(self) -> ServiceDefinition:
        return ServiceDefinition(
            hook=self.hook, id=self.id, title=self.title, description=self.description, prefetch=PREFETCH,
            usageRequirements="Adults with neurosarcoidosis; needs read access to the patient's Conditions, "
            "medications and Observations (prefetch or fhirServer with fhirAuthorization).",
        )


_COMMON = (
    " Works out where the patient stands on the neurosarcoidosis treatment ladder (glucocorticoids, then "
    "methotrexate, then infliximab; ERS 2021) and, for immune globulin orders, checks the boxed-warning "
    "risks (renal, thrombosis), IgA deficiency and the 2 g/kg dose against the patient's weight. Cards "
    "appear only for ladder drugs and immune globulin."
)

SERVICES: dict[str, Service] = {
    s.id: s
    for s in (
        Service(
            id="neurosarcoidosis-order-select",
            hook="order-select",
            title="Neurosarcoidosis treatment and IVIG safety (order select)",
            description="Advice when a clinician selects a glucocorticoid, second-line agent, anti-TNF or "
            "immune globulin order." + _COMMON,
        ),
        Service(
            id="neurosarcoidosis-patient-view",
            hook="patient-view",
            title="Neurosarcoidosis treatment stage (patient view)",
            description="A summary of where the patient stands on the neurosarcoidosis treatment ladder, and "
            "whether IVIG may be considered, when the chart is opened." + _COMMON,
        ),
        Service(
            id="neurosarcoidosis-order-sign",
            hook="order-sign",
            title="Neurosarcoidosis treatment and IVIG safety (order sign)",
            description="The same checks when the clinician signs the orders." + _COMMON,
        ),
    )
}


def discovery_document() -> DiscoveryResponse:
    return DiscoveryResponse(services=[s.definition() for s in SERVICES.values()])
