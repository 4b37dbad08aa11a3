"""Storage of FHIR resources: tables, search index and the SQL repository."""
