"""An OpenAPI 3.1 description of the FHIR REST API, generated from what the server serves.

The FHIR endpoints are plain Starlette routes (service/api/fhir_routes.py), invisible to
FastAPI's generator, so this builds the document from the same sources as the
CapabilityStatement. It is for API tooling (schemathesis, client generators); the normative
description of the FHIR API stays the CapabilityStatement at /fhir/metadata.
Resource bodies are described loosely (a few common elements, anything else allowed): the
server's validator, not this document, is the judge of a resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service import __version__
from service.fhir import spec
from service.fhir.validation import WRITABLE_TYPES

__all__ = ["openapi_document"]

_FHIR_JSON = "application/fhir+json"
_ID = {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$"}
_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
_RESULT_PARAMS = (
    ("_count", {"type": "integer", "minimum": 0}),
    ("_offset", {"type": "integer", "minimum": 0}),
    ("_sort", {"type": "string"}),
    ("_include", {"type": "string"}),
    ("_revinclude", {"type": "string"}),
    ("_summary", {"type": "string", "enum": ["true", "false", "text", "data", "count"]}),
    ("_elements", {"type": "string"}),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}),
    ("_id", {"type": "string"}),
    ("_lastUpdated", {"type": "string"}),
)


def _fhir_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {_FHIR_JSON: {"schema": dict(schema)}, "application/json": {"schema": dict(schema)}}


def _responses(ok: str, description: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    success: dict[str, Any] = {"description": description}
    if schema is not None:
        success["content"] = {_FHIR_JSON: {"schema": dict(schema)}}
    return {
        ok: success,
        "default": {
            "description": "An error, as an OperationOutcome",
            "content": {_FHIR_JSON: {"schema": _OUTCOME}},
        },
    }


def _resource_schema(resource_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"const": resource_type},
            "id": _ID,
            "meta": {"type": "object"},
            "identifier": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"system": {"type": "string"}, "value": {"type": "string"}},
                },
            },
            "status": {"type": "string"},
            "subject": {"type": "object", "properties": {"reference": {"type": "string"}}},
            "extension": {"type": "array", "items": {"type": "object"}},
        },
    }


def _search_parameters(codes: list[str]) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in _RESULT_PARAMS
    ]
    parameters.extend(
        {"name": code, "in": "query", "required": False, "schema": {"type": "string"}}
        for code in codes
        if code not in dict(_RESULT_PARAMS)
    )
    return parameters


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": _ID} for name in names]


def _type_paths(resource_type: str, codes: list[str]) -> dict[str, Any]:
    resource = {"$ref": f"#/components/schemas/{resource_type}"}
    bundle = {"$ref": "#/components/schemas/Bundle"}
    writable = resource_type in WRITABLE_TYPES
    body = {"required": True, "content": _fhir_content(resource)}
    type_ops: dict[str, Any] = {
        "get": {
            "operationId": f"search{resource_type}",
            "summary": f"Search {resource_type}",
            "parameters": _search_parameters(codes),
            "responses": _responses("200", "A searchset Bundle", bundle),
        }
    }
    # the writes below are added to these same dicts, so they must not be copied into paths
    instance_ops: dict[str, Any] = {
        "parameters": _path_params("id"),
        "get": {
            "operationId": f"read{resource_type}",
            "summary": f"Read a {resource_type}",
            "responses": _responses("200", f"The {resource_type}", resource),
        },
    }
    paths: dict[str, Any] = {
        f"/fhir/{resource_type}": type_ops,
        f"/fhir/{resource_type}/_search": {
            "post": {
                "operationId": f"searchPost{resource_type}",
                "summary": f"Search {resource_type} with form parameters",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {code: {"type": "string"} for code in codes},
                            }
                        }
                    },
                },
                "responses": _responses("200", "A searchset Bundle", bundle),
            }
        },
        f"/fhir/{resource_type}/_history": {
            "get": {
                "operationId": f"typeHistory{resource_type}",
                "parameters": _search_parameters([])[:2],
                "responses": _responses("200", "A history Bundle", bundle),
            }
        },
        f"/fhir/{resource_type}/{{id}}": instance_ops,
        f"/fhir/{resource_type}/{{id}}/_history": {
            "parameters": _path_params("id"),
            "get": {
                "operationId": f"instanceHistory{resource_type}",
                "responses": _responses("200", "A history Bundle", bundle),
            },
        },
        f"/fhir/{resource_type}/{{id}}/_history/{{vid}}": {
            "parameters": _path_params("id", "vid"),
            "get": {
                "operationId": f"vread{resource_type}",
                "responses": _responses("200", f"A version of the {resource_type}", resource),
            },
        },
    }
    if writable:
        type_ops["post"] = {
            "operationId": f"create{resource_type}",
            "summary": f"Create a {resource_type}",
            "parameters": [
                {
                    "name": "If-None-Exist",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": body,
            "responses": _responses("201", "Created", resource),
        }
        instance_ops["put"] = {
            "operationId": f"update{resource_type}",
            "requestBody": body,
            "responses": _responses("200", "Updated", resource),
        }
        instance_ops["patch"] = {
            "operationId": f"patch{resource_type}",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json-patch+json": {
                        "schema": {"$ref": "#/components/schemas/JsonPatch"}
                    }
                },
            },
            "responses": _responses("200", "Patched", resource),
        }
        instance_ops["delete"] = {
            "operationId": f"delete{resource_type}",
            "responses": _responses("204", "Deleted", None),
        }
    return paths


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {t: _resource_schema(t) for t in spec.SUPPORTED_RESOURCE_TYPES}
    schemas["OperationOutcome"] = {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                    },
                },
            },
        },
    }
    schemas["Bundle"] = {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {
                "enum": [
                    "batch",
                    "transaction",
                    "searchset",
                    "history",
                    "batch-response",
                    "transaction-response",
                ]
            },
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "fullUrl": {"type": "string"},
                        "resource": {"type": "object"},
                        "request": {
                            "type": "object",
                            "required": ["method", "url"],
                            "properties": {
                                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                                "url": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    }
    schemas["JsonPatch"] = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                "path": {"type": "string"},
                "from": {"type": "string"},
                "value": {},
            },
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    }


def openapi_document(search_params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build the OpenAPI document of /fhir from the indexed search parameters."""
    paths: dict[str, Any] = {
        "/fhir/metadata": {
            "get": {
                "operationId": "capabilities",
                "security": [],
                "responses": _responses("200", "The CapabilityStatement", {"type": "object"}),
            }
        },
        "/fhir": {
            "post": {
                "operationId": "batchOrTransaction",
                "requestBody": {
                    "required": True,
                    "content": _fhir_content({"$ref": "#/components/schemas/Bundle"}),
                },
                "responses": _responses(
                    "200", "The response Bundle", {"$ref": "#/components/schemas/Bundle"}
                ),
            }
        },
        "/fhir/Patient/{id}/$consent-status": {
            "parameters": _path_params("id"),
            "get": {
                "operationId": "consentStatus",
                "parameters": [
                    {"name": "organization", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": _responses("200", "Parameters", {"type": "object"}),
            },
        },
    }
    for resource_type in spec.SUPPORTED_RESOURCE_TYPES:
        paths.update(_type_paths(resource_type, sorted(search_params.get(resource_type, {}))))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stafett FHIR R4 API",
            "version": __version__,
            "description": "FHIR R4 REST API of Stafett; the CapabilityStatement at "
            "/fhir/metadata is the normative description.",
        },
        "paths": paths,
        "components": _components(),
        "security": [{"bearer": []}],
    }
