"""FHIR search: value extraction for the index, parameter parsing and SQL building."""
