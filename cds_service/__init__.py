"""CDS Hooks 2.0.1 service: neurosarcoidosis treatment escalation and IVIG safety."""

__version__ = "0.1.0"
