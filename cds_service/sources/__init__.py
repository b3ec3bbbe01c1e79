"""Where the FHIR data of a hook call comes from: one seam (:class:`base.DataSource`), three sources.

* :mod:`prefetch` — what the EHR sent in ``prefetch``;
* :mod:`fhir_server` — the EHR's FHIR server, for keys the EHR did not fill (behind the per-origin guard
  of :mod:`origin`: bounded concurrency and a circuit breaker);
* :mod:`bundle` — a FHIR Bundle posted by a developer (CLI, ``/fixtures/evaluate``).

:mod:`gather` asks them in order, each key getting a result of its own (answered, known empty, failed,
unavailable), and applies one :class:`gather.GatherPolicy`.
"""
