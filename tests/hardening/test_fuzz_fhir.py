"""Fuzz the path from a request body to a stored resource: parse, limits, validate, index.

Only the documented errors may come out (FhirError with a 4xx status, which the API renders
as an OperationOutcome); anything else would be a 500. Bounded by max_examples: each test
runs in seconds; STAFETT_FUZZ_EXAMPLES scales them all for a longer run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.api.limits import check_json_depth
from service.errors import FhirError
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES
from service.fhir.validation import WRITABLE_TYPES, parse_json, validate_resource
from service.search.extract import ResourceIndexer
from tests.hardening.strategies import EXAMPLES_DIR, json_values, load_examples, mutated
from tests.support import FHIR_JSON, LiveServer

SCALE = float(os.environ.get("STAFETT_FUZZ_EXAMPLES_SCALE", "1"))
EXAMPLES = load_examples()
INDEXER = ResourceIndexer(base_url="http://127.0.0.1/fhir")


def fuzz_settings(examples: int) -> settings:
    """Return bounded Hypothesis settings: examples times the scale, no deadline."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        # `make test` replays the same inputs (a CI run fails only on a change of ours);
        # `make fuzz` draws new ones (STAFETT_FUZZ_RANDOM=1)
        derandomize=os.environ.get("STAFETT_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def only_client_errors(call: Callable[[], Any]) -> Any:
    """Run call; a FhirError must be a 4xx, and nothing else may escape."""
    try:
        return call()
    except FhirError as exc:
        error = exc
    assert 400 <= error.status < 500, error
    assert error.issues
    return None


def body_to_resource(body: bytes, resource_type: str) -> str | None:
    """Do what the API does with a create's body; return the type if it is valid."""
    value = parse_json(body)
    check_json_depth(value, max_depth=100)
    return validate_resource(value, expected_type=resource_type)


@cache
def _top_level_elements(resource_type: str) -> list[str]:
    model = get_fhir_model_class(resource_type)
    return sorted(field.alias or name for name, field in model.model_fields.items())


@st.composite
def resource_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Return an object with a real resourceType and real element names, garbage values."""
    resource_type = draw(st.sampled_from(sorted(SUPPORTED_RESOURCE_TYPES)))
    names = _top_level_elements(resource_type)
    chosen = draw(st.lists(st.sampled_from(names), max_size=6, unique=True))
    resource: dict[str, Any] = {"resourceType": resource_type}
    for name in chosen:
        resource[name] = draw(json_values(max_leaves=8))
    return resource


@fuzz_settings(400)
@given(body=st.binary(max_size=300))
@example(body=b"\xff\xfe{}")
@example(body=b'{"resourceType":"Patient","id":"\\ud800"}')  # a lone surrogate escape
@example(body=b"[" * 2000)
@example(body=b'{"resourceType":"Patient","birthDate":' + b"9" * 400 + b"}")
def test_arbitrary_bytes(body: bytes) -> None:
    only_client_errors(lambda: body_to_resource(body, "Patient"))


@fuzz_settings(400)
@given(value=json_values())
def test_arbitrary_json(value: Any) -> None:
    body = json.dumps(value).encode()
    only_client_errors(lambda: body_to_resource(body, "Patient"))


@fuzz_settings(200)
@given(resource=resource_shaped())
def test_resource_shaped_garbage(resource: dict[str, Any]) -> None:
    body = json.dumps(resource).encode()
    resource_type = resource["resourceType"]
    valid = only_client_errors(lambda: body_to_resource(body, resource_type))
    if valid:
        INDEXER.index(json.loads(body))  # what the store does with every valid resource


@fuzz_settings(400)
@given(data=st.data())
def test_mutated_examples(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(EXAMPLES))
    resource = data.draw(mutated(original))
    resource_type = original["resourceType"]
    body = json.dumps(resource).encode()
    valid = only_client_errors(lambda: body_to_resource(body, resource_type))
    if valid and resource_type in WRITABLE_TYPES:
        INDEXER.index(json.loads(body))


@pytest.mark.e2e
@fuzz_settings(100)
@given(data=st.data())
def test_mutated_examples_over_http(server: LiveServer, data: st.DataObject) -> None:
    """Create and update mutated examples on both backends: never a 500."""
    original = data.draw(st.sampled_from(EXAMPLES))
    resource = data.draw(mutated(original))
    resource_type = original["resourceType"]
    body = json.dumps(resource).encode()
    with server.client(server.system_token(org="974760673")) as client:
        created = client.post(
            f"/{resource_type}", content=body, headers={"Content-Type": FHIR_JSON}
        )
        assert created.status_code < 500, created.text
        assert created.status_code in (201, 400, 403, 404, 409, 412, 413, 422), created.text
        if created.status_code != 201 and isinstance(resource, dict):
            resource["id"] = "fuzz-" + str(abs(hash(body)) % 10_000)
            updated = client.put(
                f"/{resource_type}/{resource['id']}",
                content=json.dumps(resource).encode(),
                headers={"Content-Type": FHIR_JSON},
            )
            assert updated.status_code < 500, updated.text


@pytest.mark.e2e
@fuzz_settings(40)
@given(data=st.data())
def test_mutated_transaction_over_http(server: LiveServer, data: st.DataObject) -> None:
    """Post the demo transaction with a few values changed: a 4xx or a Bundle, never a 500."""
    bundle = json.loads((EXAMPLES_DIR / "demo-transaction.json").read_text(encoding="utf-8"))
    body = json.dumps(data.draw(mutated(bundle, max_mutations=3))).encode()
    with server.client(server.system_token(org="974760673")) as client:
        response = client.post("", content=body, headers={"Content-Type": FHIR_JSON})
    assert response.status_code < 500, response.text


def test_examples_are_valid() -> None:
    # the mutations start from valid resources, or they would test the wrong thing
    for resource in EXAMPLES:
        assert validate_resource(resource) == resource["resourceType"]
