"""The clinical engine: FHIR record -> facts -> treatment stage -> rules -> cards.

Pure and synchronous; it imports nothing from the web layer, authentication, the store or the data
sources (tests/test_layout.py enforces this). The entry point is :func:`cds_service.clinical.engine.evaluate`.
"""
