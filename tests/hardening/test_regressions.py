"""Bugs the fuzzers found, kept as plain examples on both backends."""

from __future__ import annotations

import pytest

from tests.hardening.conftest import outcome_codes
from tests.support import FHIR_JSON, FNR_SYSTEM, LiveServer

pytestmark = pytest.mark.e2e

NUL_RESOURCES = [
    '{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}',
    '{"resourceType":"Patient","identifier":[{"system":"urn:x","value":"a\\u0000"}]}',
    '{"resourceType":"Patient","_gender":{"extension":[{"url":"http://a","valueString":"\\u0000"}]}}',
]


@pytest.mark.parametrize("body", NUL_RESOURCES)
def test_nul_in_a_resource_is_422_not_500(server: LiveServer, body: str) -> None:
    """test_fuzz_fhir: PostgreSQL refuses U+0000 in JSONB and text, so the write was a 500."""
    with server.client(server.system_token(org="974760673")) as client:
        response = client.post("/Patient", content=body, headers={"Content-Type": FHIR_JSON})
        assert response.status_code == 422, response.text
        assert "NUL" in response.text
        bundle = (
            '{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:'
            '6f9d2b8e-0c1a-4a57-9a51-1f0a3c2d7b11","request":{"method":"POST","url":"Patient"},'
            '"resource":' + body + "}]}"
        )
        response = client.post("", content=bundle, headers={"Content-Type": FHIR_JSON})
        assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    "params",
    [
        {"identifier": f"{FNR_SYSTEM}|1\x00"},
        {"name": "a\x00"},
        {"subject.identifier": f"{FNR_SYSTEM}|\x00"},
        {"na\x00me": "x"},
    ],
)
def test_nul_in_a_search_is_400_not_500(server: LiveServer, params: dict[str, str]) -> None:
    """test_fuzz_search found it: the NUL reached PostgreSQL as a bound parameter (500)."""
    with server.client(server.system_token(org="974760673")) as client:
        response = client.get("/Task", params=params)
        assert response.status_code == 400, response.text
        assert outcome_codes(response) == ["invalid"]
        in_bundle = client.post(
            "",
            content=(
                '{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET",'
                '"url":"Task?name=a%00"}}]}'
            ),
            headers={"Content-Type": FHIR_JSON},
        )
        assert in_bundle.status_code == 200
        assert in_bundle.json()["entry"][0]["response"]["status"] == "400"


@pytest.mark.parametrize(
    "request_json",
    [
        '{"method":["POST"],"url":"Patient"}',
        '{"method":"POST","url":"Patient","ifNoneExist":["identifier=a|b"]}',
        '{"method":"POST","url":"Patient","ifNoneExist":7}',
        '{"method":"PUT","url":"Patient/x","ifMatch":{"v":1}}',
    ],
)
@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_bundle_request_of_the_wrong_type_is_400_not_500(
    server: LiveServer, request_json: str, kind: str
) -> None:
    """test_fuzz_fhir found it: a list or number in entry.request crashed the processor."""
    body = (
        '{"resourceType":"Bundle","type":"' + kind + '","entry":[{"fullUrl":"urn:uuid:'
        '6f9d2b8e-0c1a-4a57-9a51-1f0a3c2d7b12","resource":{"resourceType":"Patient"},'
        '"request":' + request_json + "}]}"
    )
    with server.client(server.system_token(org="974760673")) as client:
        response = client.post("", content=body, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["structure"]


def test_delete_with_a_malformed_id_is_400(server: LiveServer) -> None:
    """schemathesis found it: DELETE accepted an id no resource can have (204)."""
    with server.client(server.system_token(org="974760673")) as client:
        response = client.delete("/Patient/%F2%99%98%A3")
    assert response.status_code == 400, response.text
    assert outcome_codes(response) == ["invalid"]


def test_a_bundle_entry_with_a_list_as_fullurl_is_no_reference_key() -> None:
    # found by tests/hardening/test_fuzz_mapping.py in CI: TypeError (unhashable list)
    from mapping._internal.references import build_index  # noqa: PLC0415

    identifiers = [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "15832151200"}]
    resource = {"resourceType": "RelatedPerson", "id": "mor", "identifier": identifiers}
    index = build_index({}, [(["https://x/fhir/RelatedPerson/mor"], resource)])  # type: ignore[list-item]
    assert index == {"RelatedPerson/mor": identifiers}


def test_a_bundle_whose_entry_is_not_an_array_is_a_mapping_error() -> None:
    # found by tests/hardening/test_fuzz_mapping.py: TypeError ('int' object is not iterable)
    from mapping import MappingEngine, MappingError  # noqa: PLC0415

    engine = MappingEngine.from_directory()
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": 7}
    with pytest.raises(MappingError, match=r"Bundle\.entry must be an array"):
        engine.map("barnehagesystem", "outbound", "CarePlan", bundle, {})
