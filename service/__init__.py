"""Stafett FHIR R4 data service: the system of record for the BTI stafettlogg."""

__all__ = ["__version__"]

__version__ = "0.1.0"
