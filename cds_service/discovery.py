"""The discovery document (``GET /cds-services``): every service of the registry and its prefetch templates."""

from __future__ import annotations

from cds_service.models import DiscoveryResponse, ServiceDefinition
from cds_service.services import Registry, Service


def definition(service: Service) -> ServiceDefinition:
    return ServiceDefinition(hook=service.hook, id=service.id, title=service.title,
                             description=service.description, prefetch=dict(service.prefetch),
                             usageRequirements=service.usage_requirements)


def discovery_document(services: Registry) -> DiscoveryResponse:
    return DiscoveryResponse(services=[definition(s) for s in services])
