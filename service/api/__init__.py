"""The HTTP face of Stafett: FastAPI app factory, FHIR routes, health and rendering."""
