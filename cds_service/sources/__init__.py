"""Where the FHIR data of a hook call comes from: one interface (:class:`base.DataSource`), three sources.

* :mod:`prefetch` — what the EHR sent in ``prefetch``;
* :mod:`fhir_server` — the EHR's FHIR server, for keys the EHR did not fill;
* :mod:`bundle` — a FHIR Bundle posted by a developer (CLI, ``/fixtures/evaluate``).

:mod:`gather` combines them the way the spec says.
"""
