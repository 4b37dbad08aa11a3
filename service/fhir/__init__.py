"""FHIR R4 specification data, validation and JSON helpers."""
