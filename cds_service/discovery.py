"""The discovery document (``GET /cds-services``): every service of the registry and its prefetch templates."""

from __future__ import annotations

from cds_service.models import DiscoveryResponse, ServiceDefinition
from cds_service.services import Registry, Service

# Discovery extension: {"on": [rule ids], "shadow": [...], "off": [...]} as configured by CDS_RULES_FILE.
RULE_MODES_EXTENSION = "org.neurosarcoidosis-cds.rule-modes"


def definition(service: Service, modes=None) -> ServiceDefinition:
    """The discovery entry; with the site's rule modes (:mod:`cds_service.governance.modes`), they are listed
    in the rule-modes extension, and shadow or switched-off rules are named in the description."""
    description, extension = service.description, None
    if modes is not None:
        by_mode = modes.by_mode()
        extension = {RULE_MODES_EXTENSION: {m: sorted(rules) for m, rules in by_mode.items()}}
        if by_mode["shadow"]:
            description += f" Rules in silent (shadow) mode at this site: {', '.join(sorted(by_mode['shadow']))}."
        if by_mode["off"]:
            description += f" Rules switched off at this site: {', '.join(sorted(by_mode['off']))}."
    return ServiceDefinition(hook=service.hook, id=service.id, title=service.title,
                             description=description, prefetch=dict(service.prefetch),
                             usageRequirements=service.usage_requirements, extension=extension)


def discovery_document(services: Registry, modes=None) -> DiscoveryResponse:
    return DiscoveryResponse(services=[definition(s, modes) for s in services])
