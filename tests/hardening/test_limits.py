"""Request limits: body size (also chunked), JSON nesting, search size, Bundle entries."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from service.api.limits import RequestTooCostly, check_search_size, json_depth_exceeds
from tests.hardening.conftest import fhir_post, outcome_codes
from tests.support import FNR_SYSTEM, synthetic_fnr

pytestmark = pytest.mark.e2e


def _nested_extensions(levels: int) -> str:
    """Return a Patient whose extensions nest `levels` deep (two JSON levels each)."""
    inner = '{"url":"http://example.org/x","extension":[' * levels
    leaf = '{"url":"http://example.org/x","valueString":"x"}'
    return '{"resourceType":"Patient","extension":[' + inner + leaf + "]}" * levels + "]}"


def _depth(text: str) -> int:
    depth = deepest = 0
    for char in text:  # no strings with brackets in these bodies
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize(
    ("value", "limit", "exceeds"),
    [
        ({}, 1, False),
        ([], 1, False),
        ({"a": []}, 1, True),
        ({"a": []}, 2, False),
        ({"a": [{"b": [1]}]}, 4, False),
        ({"a": [{"b": [1]}]}, 3, True),
        ([[[[]]]], 4, False),
        ([[[[]]]], 3, True),
        ({"a": 1, "b": {"c": {"d": {}}}}, 3, True),
    ],
)
def test_json_depth_counts_objects_and_arrays(value: object, limit: int, exceeds: bool) -> None:
    assert json_depth_exceeds(value, limit) is exceeds


def test_json_depth_survives_what_recursion_would_not() -> None:
    value: list[object] = []
    node = value
    for _ in range(100_000):
        child: list[object] = []
        node.append(child)
        node = child
    assert json_depth_exceeds(value, 200)


def test_search_size_counts_parameters_and_values() -> None:
    check_search_size([("a", "1")] * 10, max_params=10, max_values=10)
    with pytest.raises(RequestTooCostly, match="11 parameters"):
        check_search_size([("a", "1")] * 11, max_params=10, max_values=100)
    with pytest.raises(RequestTooCostly, match="12 values"):
        check_search_size([("a", "1,2,3")] * 4, max_params=10, max_values=10)


def test_deep_json_is_refused_before_validation(system_client: httpx.Client) -> None:
    body = _nested_extensions(15)
    assert _depth(body) > 20
    response = fhir_post(system_client, "/Patient", body)
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]
    assert "20 levels" in response.json()["issue"][0]["diagnostics"]


def test_json_within_the_depth_limit_reaches_validation(system_client: httpx.Client) -> None:
    body = _nested_extensions(8)
    assert _depth(body) <= 20
    response = fhir_post(system_client, "/Patient", body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["", "/Patient"])
def test_deep_json_in_bundles_and_patches_is_refused(
    system_client: httpx.Client, path: str
) -> None:
    resource = _nested_extensions(15)
    bundle = (
        '{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST",'
        '"url":"Patient"},"resource":' + resource + "}]}"
    )
    response = fhir_post(system_client, path, bundle if not path else resource)
    assert response.status_code == 400, response.text
    created = fhir_post(system_client, "/Patient", '{"resourceType":"Patient"}')
    assert created.status_code == 201
    patch = '[{"op":"add","path":"/extension","value":[' + resource + "]}]"
    response = system_client.patch(
        f"/Patient/{created.json()['id']}",
        content=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]


def test_regression_deep_extensions_gave_500(default_server_client: httpx.Client) -> None:
    """Found by hand while building the limits: 150+ nested extensions exhausted the stack.

    fhir.resources' validators recurse per level, so a body that orjson accepts (it allows
    1024 levels) raised RecursionError inside validation: a 500. The default limit of 100
    levels stops it before validation.
    """
    for levels in (150, 300, 500):
        for path, body in (
            ("/Patient", _nested_extensions(levels)),
            (
                "",
                '{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST",'
                '"url":"Patient"},"resource":' + _nested_extensions(levels) + "}]}",
            ),
        ):
            response = fhir_post(default_server_client, path, body)
            assert response.status_code == 400, (levels, path, response.text)


@pytest.fixture(scope="module")
def default_server_client(default_server: object) -> Iterator[httpx.Client]:
    """Return a client of the default server with a system token."""
    from tests.support import LiveServer, synthetic_orgnr  # noqa: PLC0415

    assert isinstance(default_server, LiveServer)
    with default_server.client(default_server.system_token(org=synthetic_orgnr())) as client:
        yield client


def test_too_many_search_parameters(system_client: httpx.Client) -> None:
    params = [("identifier", f"{FNR_SYSTEM}|{synthetic_fnr()}") for _ in range(11)]
    response = system_client.get("/Patient", params=params)
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]
    assert system_client.get("/Patient", params=params[:10]).status_code == 200


def test_too_many_search_values(system_client: httpx.Client) -> None:
    values = ",".join(f"{FNR_SYSTEM}|{synthetic_fnr()}" for _ in range(31))
    response = system_client.get("/Patient", params={"identifier": values})
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]


def test_too_many_search_parameters_in_a_form(system_client: httpx.Client) -> None:
    form = urlencode([("name", f"n{i}") for i in range(11)])
    response = system_client.post(
        "/Patient/_search",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]


def test_too_many_criteria_in_a_conditional_update(system_client: httpx.Client) -> None:
    query = urlencode([("name", f"n{i}") for i in range(11)])
    response = system_client.put(
        f"/Patient?{query}",
        content='{"resourceType":"Patient"}',
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["too-costly"]


def test_too_many_bundle_entries(system_client: httpx.Client) -> None:
    entry = '{"request":{"method":"GET","url":"Patient?_count=1"}}'
    body = '{"resourceType":"Bundle","type":"batch","entry":[' + ",".join([entry] * 6) + "]}"
    response = fhir_post(system_client, "", body)
    assert response.status_code == 413, response.text
    assert outcome_codes(response) == ["too-costly"]
    body = '{"resourceType":"Bundle","type":"batch","entry":[' + ",".join([entry] * 5) + "]}"
    assert fhir_post(system_client, "", body).status_code == 200


def test_body_over_the_limit_by_content_length(system_client: httpx.Client) -> None:
    body = '{"resourceType":"Patient","gender":"' + "x" * 5000 + '"}'
    response = fhir_post(system_client, "/Patient", body)
    assert response.status_code == 413
    assert outcome_codes(response) == ["too-costly"]


@pytest.mark.parametrize("path", ["/Patient", "", "/Patient/_search"])
def test_regression_chunked_body_over_the_limit_gave_500(
    system_client: httpx.Client, path: str
) -> None:
    """Found while checking the limit: a chunked body crossing it answered 500, not 413.

    The size check raised a private exception from receive(); FhirDispatch turns every
    exception into a response, so it became "unexpected error". It is a PayloadTooLarge now.
    """

    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType":"Patient","gender":"'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    content_type = (
        "application/x-www-form-urlencoded" if "_search" in path else "application/fhir+json"
    )
    response = system_client.post(path, content=chunks(), headers={"Content-Type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert outcome_codes(response) == ["too-costly"]
